"""Fine-tune a ViT for classification: linear, LoRA or full, selected on validation AUROC.

``finetune`` builds the classifier for a mode, prints its trainable parameter count
and share, trains it with the engine's ``fit`` while an ``evaluate`` callback
scores the validation split (macro AUROC, ``greenfm.evaluate.metrics``) after every
epoch, then restores the best epoch (the engine's ``best.ckpt``) and scores the test
split once, with patient-bootstrap CIs. Results go to ``RUN_DIR/finetune.json``, val and
test scores to ``RUN_DIR/predictions.parquet``, the selected model (LoRA merged) to
``RUN_DIR/exported/best.safetensors``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from greenfm.adapt.classifier import ClassifierConfig, PooledClassifier, ViTClassifier, build_classifier
from greenfm.adapt.objective import ClassifierMethod, Task, class_indices, positive_weights
from greenfm.adapt.sampling import balanced_sampler
from greenfm.errors import ConfigError
from greenfm.io_safety import plain_file_mode
from greenfm.labeling.policies import LabelPolicy

log = logging.getLogger(__name__)

SELECT_METRIC = "val_macro_auroc"


@dataclass
class FinetuneResult:
    """What a fine-tuning run produced (also written to ``finetune.json``)."""

    run_dir: Path
    classifier: dict[str, Any]
    parameters: dict[str, float]
    best_epoch: int | None
    best_val_macro_auroc: float | None
    test: dict[str, Any] | None
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "run_dir"}
        out["run_dir"] = str(self.run_dir)
        return out


def dataset_labels(dataset: Dataset) -> np.ndarray:
    """(N, K) labels of a dataset: from its manifest when it has one, else item by item."""
    manifest, findings = getattr(dataset, "manifest", None), getattr(dataset, "findings", None)
    if manifest is not None and findings is not None:
        return manifest.labels(findings)
    return np.stack([np.asarray(dataset[i]["labels"], dtype=np.float32) for i in range(len(dataset))])


@torch.no_grad()
def predict(
    method: ClassifierMethod, dataset: Dataset, *, batch_size: int = 64, num_workers: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(labels, scores) of a whole dataset, in order, with the method in eval mode."""
    device = next(method.parameters()).device
    was_training = method.training
    method.eval()
    labels, scores = [], []
    try:
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers):
            scores.append(method.predict_scores(batch["image"].to(device)).cpu().numpy())
            labels.append(batch["labels"].numpy())
    finally:
        method.train(was_training)
    return np.concatenate(labels), np.concatenate(scores)


def evaluate_split(
    method: ClassifierMethod,
    dataset: Dataset,
    *,
    names: Sequence[str] | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
):
    """Per-finding and macro AUROC / AUPRC of ``method`` on ``dataset`` (a ``Metrics``)."""
    return score_split(method, dataset, names=names, batch_size=batch_size, num_workers=num_workers)[0]


def score_split(
    method: ClassifierMethod,
    dataset: Dataset,
    *,
    names: Sequence[str] | None = None,
    bootstrap: int = 0,
    bootstrap_seed: int = 0,
    batch_size: int = 64,
    num_workers: int = 0,
):
    """(metrics, predictions) of ``method`` on ``dataset``, in one pass over it.

    With ``bootstrap`` the metrics carry 95% CIs from that many patient-cluster
    resamples (``dataset.patient_ids``; each image its own patient when absent).
    ``predictions`` is the long table ``id, patient_id, finding, label, score`` (one-hot
    targets per class for a multi-class task; NaN where a label is unknown or uncertain).
    """
    import pandas as pd

    from greenfm.evaluate.bootstrap import bootstrap_metrics
    from greenfm.evaluate.metrics import compute_metrics

    labels, scores = predict(method, dataset, batch_size=batch_size, num_workers=num_workers)
    names = list(names) if names is not None else [f"finding_{k}" for k in range(scores.shape[1])]
    if method.task == "multiclass":
        y = class_indices(torch.from_numpy(labels)).numpy().astype(float)
        y[y < 0] = np.nan
        targets = np.where(np.isfinite(y)[:, None], (y[:, None] == np.arange(len(names))).astype(float), np.nan)
    else:
        y, targets = labels, np.where(labels == -1, np.nan, labels)
    ids = np.asarray(getattr(dataset, "ids", np.arange(len(dataset)).astype(str)))
    known_patients = getattr(dataset, "patient_ids", None)
    patients = np.asarray(known_patients if known_patients is not None else ids)
    if bootstrap:  # without patient ids every image is its own cluster, and the CI says so
        metrics = bootstrap_metrics(y, scores, known_patients, task=method.task, names=names, n_resamples=bootstrap,
                                    seed=bootstrap_seed)  # fmt: skip
    else:
        metrics = compute_metrics(y, scores, task=method.task, names=names)
    predictions = pd.DataFrame({
        "id": np.repeat(ids, len(names)),
        "patient_id": np.repeat(patients, len(names)),
        "finding": np.tile(np.asarray(names, dtype=object), len(ids)),
        "label": targets.reshape(-1),
        "score": scores.reshape(-1),
    })  # fmt: skip
    return metrics, predictions


class BestEpochTracker:
    """The engine's ``evaluate`` callback: validation metrics each epoch, best trainable weights kept.

    Only parameters that train are copied (LoRA + head in ``lora`` mode), on the CPU.
    """

    def __init__(self, method: ClassifierMethod, val: Dataset, *, names=None, batch_size=64, num_workers=0):
        self.method, self.val, self.names = method, val, names
        self.batch_size, self.num_workers = batch_size, num_workers
        self.history: list[dict[str, Any]] = []
        self.best_score: float | None = None
        self.best_epoch: int | None = None
        self.best_state: dict[str, torch.Tensor] | None = None

    def __call__(self, *args, **kwargs) -> dict[str, float]:
        metrics = evaluate_split(
            self.method, self.val, names=self.names, batch_size=self.batch_size, num_workers=self.num_workers
        )
        epoch = len(self.history)
        score = metrics.macro_auroc
        row = {
            "epoch": epoch,
            SELECT_METRIC: math.nan if score is None else score,
            "val_macro_auprc": math.nan if metrics.macro_auprc is None else metrics.macro_auprc,
            "val_n_evaluable": metrics.n_evaluable,
        }
        self.history.append(row)
        if score is not None and (self.best_score is None or score > self.best_score):
            self.best_score, self.best_epoch = score, epoch
            self.best_state = {
                n: p.detach().to("cpu", copy=True) for n, p in self.method.named_parameters() if p.requires_grad
            }
        return {k: float(v) for k, v in row.items() if k != "epoch"}

    def restore_best(self) -> None:
        """Load the best epoch's trainable weights back into the method (no-op if none was scored)."""
        if self.best_state is None:
            return
        params = dict(self.method.named_parameters())
        with torch.no_grad():
            for name, value in self.best_state.items():
                params[name].copy_(value)


def format_parameter_counts(counts: dict[str, float], config: ClassifierConfig) -> str:
    """One line: trainable parameters, their share of all parameters, and the mode."""
    mode = config.mode
    if mode == "lora":
        mode += f" {config.preset} r={config.rank} ({config.lora_variant}), LoRA {counts['lora']:,}"
    return (
        f"trainable parameters: {counts['trainable']:,} of {counts['total']:,} "
        f"({counts['trainable_percent']:.3f}%), mode {mode}"
    )


def finetune(
    backbone: nn.Module,
    train: Dataset,
    val: Dataset | None,
    test: Dataset | None,
    *,
    classifier: ClassifierConfig,
    train_config: Any,
    run_dir: str | Path,
    task: Task = "multilabel",
    names: Sequence[str] | None = None,
    pos_weight: np.ndarray | str | None = None,
    label_policy: str | dict | LabelPolicy | None = None,
    balanced: bool = False,
    resume: bool | str = False,
    run_record: dict[str, Any] | None = None,
    eval_batch_size: int = 64,
    num_workers: int = 0,
    bootstrap: int = 0,
    bootstrap_seed: int = 0,
    fit: Callable[..., Any] | None = None,
    echo: Callable[[str], None] = print,
) -> FinetuneResult:
    """Fine-tune ``backbone`` (a timm ViT, a CNN such as a 3-D ResNet, or an encoder whose ``.model`` is one).

    ``pos_weight``: an (K,) array, ``"balanced"`` (negatives / positives per finding on
    ``train``) or None. ``label_policy``: how uncertain (-1) and unknown labels enter the
    BCE (``greenfm.labeling.policies``; default: masked), recorded by name in the run
    record (None for multi-class). ``balanced``: draw training images through a
    ``WeightedRandomSampler`` over label combinations. ``run_record`` (JSON-safe facts
    such as the contract and manifest hash) is stored with checkpoints and exports.
    ``fit`` defaults to ``greenfm.engine.fit``; tests pass a plain loop.

    The best validation epoch (the engine's ``best.ckpt``, which survives a resume, else
    the callback's in-memory copy) is restored, scored once on ``test`` (with
    ``bootstrap`` patient-bootstrap resamples for 95% CIs, seeded by ``bootstrap_seed``)
    and exported to ``RUN_DIR/exported/best.safetensors`` with LoRA merged. Its val and
    test scores go to ``RUN_DIR/predictions.parquet``.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if fit is None:
        from greenfm.engine import fit  # the one training loop
    model: ViTClassifier | PooledClassifier = build_classifier(backbone, classifier)
    if isinstance(pos_weight, str):
        if pos_weight != "balanced":
            raise ConfigError(f"pos_weight must be 'balanced', an array or None, not {pos_weight!r}")
        pos_weight = positive_weights(dataset_labels(train))
    method = ClassifierMethod(model, task=task, pos_weight=pos_weight, policy=label_policy)

    counts = model.parameter_counts()
    echo(format_parameter_counts(counts, model.config))
    record = {"method": "finetune", "task": task, "classifier": model.config.to_dict(), "parameters": counts,
              "label_policy": method.policy.name if task == "multilabel" else None}  # fmt: skip
    record.update(run_record or {})

    options: dict[str, Any] = {"run_record": record, "resume": resume}
    if balanced:
        seed = getattr(train_config, "seed", 0)
        options["sampler"] = balanced_sampler(dataset_labels(train), seed=seed)
    tracker = None
    if val is not None and len(val) > 0:
        tracker = BestEpochTracker(method, val, names=names, batch_size=eval_batch_size, num_workers=num_workers)
        options.update(evaluate=tracker, select_metric=SELECT_METRIC, select_mode="max")
    else:
        log.warning("no validation split: the last epoch is tested, nothing is selected")
    fitted = fit(method, train, train_config, run_dir, **options)

    best_epoch, best_value = _restore_best(method, fitted, tracker)
    result = FinetuneResult(
        run_dir=run_dir,
        classifier=model.config.to_dict(),
        parameters=counts,
        best_epoch=best_epoch,
        best_val_macro_auroc=best_value,
        test=None,
        history=tracker.history if tracker else [],
    )
    if not _rank_zero():  # DDP: the other processes stop here; rank 0 tests and writes
        return result
    scored = []
    for split, dataset, resamples in (("val", val, 0), ("test", test, bootstrap)):
        if dataset is not None and len(dataset) > 0:
            metrics, predictions = score_split(method, dataset, names=names, bootstrap=resamples,
                                               bootstrap_seed=bootstrap_seed, batch_size=eval_batch_size,
                                               num_workers=num_workers)  # fmt: skip
            scored.append(predictions.assign(split=split))
            if split == "test":
                result.test = metrics.to_dict()
    (run_dir / "predictions.parquet").unlink(missing_ok=True)  # never leave an earlier run's scores behind
    if scored:
        import pandas as pd

        pd.concat(scored)[["id", "patient_id", "split", "finding", "label", "score"]].to_parquet(
            run_dir / "predictions.parquet", index=False
        )
    if result.test is not None:
        chosen = f", best validation epoch {best_epoch}" if best_epoch is not None else ""
        ci = result.test.get("macro_auroc_ci")
        ci_text = f" [{ci[0]:.4f}, {ci[1]:.4f}] ({bootstrap} patient-bootstrap resamples)" if ci else ""
        echo(f"test macro AUROC {_fmt(result.test.get('macro_auroc'))}{ci_text}{chosen}")
    _export(method, run_dir / "exported" / "best.safetensors", record)
    (run_dir / "finetune.json").write_text(json.dumps(_json_safe(result.to_dict()), indent=2) + "\n")
    return result


def _restore_best(method: ClassifierMethod, fitted: Any, tracker: BestEpochTracker | None):
    """Load the selected epoch's weights; returns (epoch, validation macro AUROC)."""
    checkpoint = getattr(fitted, "best_checkpoint", None)
    if checkpoint is not None:
        from greenfm.engine.checkpoint import load_checkpoint

        method.load_state_dict(load_checkpoint(checkpoint)["model"])
        return fitted.best_epoch, fitted.best_metric
    if tracker is not None:
        tracker.restore_best()
        return tracker.best_epoch, tracker.best_score
    return None, None


def _export(method: ClassifierMethod, path: Path, record: dict[str, Any]) -> Path:
    """The merged classifier's weights as safetensors, with the run record as metadata."""
    from safetensors.torch import save_model

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_model(method.export_model(), str(tmp), metadata={"greenfm": json.dumps(_json_safe(record), default=str)})
    plain_file_mode(tmp)  # safetensors writes 0600
    tmp.replace(path)
    return path


def _rank_zero() -> bool:
    from greenfm.engine.run_dir import is_rank_zero

    return is_rank_zero()


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
