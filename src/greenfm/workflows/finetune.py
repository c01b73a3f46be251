"""``greenfm finetune``: adapt an encoder to a labelled, split manifest (linear, LoRA or full).

The verb loads the encoder (``load_encoder``) and the manifest (train, val and test
splits required), keeps a nested patient-grouped share of the *training* patients
(``label_fraction``; val and test are never reduced), trains with the engine through
``greenfm.adapt.finetune.finetune`` (best validation macro AUROC selected, test
scored once) and adds patient-bootstrap 95% CIs to the test metrics.

Default optimisation follows MED-PEFT, scaled to small data
(``greenfm.adapt.train_defaults``); every value can be overridden (``config`` YAML of
``TrainConfig`` fields, or options). The loss applies the run's label policy
(``label_policy``, ``greenfm.labeling.policies``; default: uncertain and unknown
labels masked) and records it with the run.

Output: the engine's run folder (``config.yaml``, ``metrics.jsonl``, ``checkpoints/``,
``compute.json``) plus ``finetune.json`` (test metrics with CIs), ``exported/best.safetensors``
(LoRA merged), ``predictions.parquet`` (val/test scores) and ``label_fraction.json``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset

from greenfm.adapt.classifier import ClassifierConfig
from greenfm.adapt.finetune import FinetuneResult, finetune
from greenfm.adapt.layer_decay import DEFAULT_LAYER_DECAY
from greenfm.adapt.train_defaults import auto_augment, build_train_config, epoch_repeats
from greenfm.config import build_config, given, train_overrides
from greenfm.data.dataset import ImageDataset
from greenfm.data.manifest import Manifest
from greenfm.data.tasks import fraction_plan, holds_a_patient, subset_counts, trainable_findings
from greenfm.engine import TrainConfig, write_run_config
from greenfm.engine.run_dir import RunDir, is_rank_zero, read_run_config
from greenfm.errors import BadInputError, ConfigError
from greenfm.labeling.policies import label_policy
from greenfm.models.backbones import Encoder
from greenfm.workflows.adapt_config import FinetuneConfig
from greenfm.workflows.finetune_data import FinetuneData, absolute_path, prepare_data
from greenfm.workflows.inputs import load_encoder

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- one run


def finetune_and_score(
    backbone: Any,
    data: FinetuneData,
    train: Manifest,
    *,
    classifier: ClassifierConfig,
    train_config: TrainConfig,
    run_dir: Path,
    augment: str,
    bootstrap: int = 1000,
    bootstrap_seed: int = 0,
    pos_weight: Any = None,
    label_policy: Any = None,
    balanced: bool = False,
    resume: bool | str = False,
    run_record: dict[str, Any] | None = None,
    echo: Callable[[str], None] = print,
) -> tuple[FinetuneResult, dict[str, str]]:
    """Fine-tune on ``train`` (a subset of ``data``'s train split) and score test once, with CIs.

    ``label_policy`` (``greenfm.labeling.policies``; default: uncertain and unknown labels
    masked) is applied by the loss and recorded with the run.

    Returns the result (``test`` with patient-bootstrap CIs) and the findings skipped
    because ``train`` cannot teach them; ``finetune.json`` is rewritten to list both.
    """
    from greenfm.data.augment import get_augment

    if data.contract.is_volume and augment not in ("none", None):
        raise ConfigError(f"augmentation {augment!r} is for 2-D images; volumes train without it (METHODS 3.7): "
                          "--augment none")
    names, skipped = trainable_findings(train.labels(data.names), data.names, data.task)
    if not names:
        raise BadInputError("no finding can be trained: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    for name, why in skipped.items():
        echo(f"skipped finding {name}: {why}")
    if isinstance(pos_weight, list):
        pos_weight = np.asarray([pos_weight[data.names.index(n)] for n in names], dtype=np.float32)
    classifier = classifier.model_copy(update={"num_classes": len(names)})
    train_ds = data.dataset(train, names, augment=get_augment(augment, data.contract), training=True)
    if epoch_repeats(len(train_ds)) > 1:  # each repeat draws its own augmentation
        train_ds = ConcatDataset([train_ds] * epoch_repeats(len(train_ds)))
    val_ds, test_ds = (data.dataset(data.splits[s], names) for s in ("val", "test"))
    _warn_unscorable(val_ds, names, data.task, echo)

    record = {**(run_record or {}), "trained_findings": names, "skipped_findings": skipped}
    torch.manual_seed(train_config.seed)  # the new head and LoRA weights: the same draw whatever ran before
    result = finetune(
        backbone, train_ds, val_ds, test_ds, classifier=classifier, train_config=train_config, run_dir=run_dir,
        task=data.task, names=names, pos_weight=pos_weight, label_policy=label_policy, balanced=balanced,
        resume=resume, run_record=record,
        eval_batch_size=max(64, train_config.batch_size), bootstrap=bootstrap, bootstrap_seed=bootstrap_seed,
        echo=echo,
    )  # fmt: skip
    if is_rank_zero():
        out = result.to_dict() | {"skipped_findings": skipped, "trained_findings": names}
        (run_dir / "finetune.json").write_text(json.dumps(_json_safe(out), indent=2) + "\n")
    return result, skipped


def _warn_unscorable(val: ImageDataset, names, task: str, echo) -> None:
    labels = val.manifest.labels(names)
    scorable = [(col == 1).any() and (col == 0).any() for col in labels.T]
    if task == "multiclass":
        scorable = [sum(scorable) >= 1]
    if not any(scorable):
        echo("warning: no finding has both classes in the validation split; "
             "nothing is selected, the last epoch is tested")


# ----------------------------------------------------------------------------- the verb


def run_finetune(
    *,
    model: str | Path | None = None,
    data: str | Path | None = None,
    out: str | Path,
    mode: str = "lora",
    preset: str = "med-peft",
    rank: int = 8,
    alpha: float = 32,
    lora_dropout: float = 0.1,
    layer_decay: float = DEFAULT_LAYER_DECAY,
    task: str = "auto",
    findings: Sequence[str] | None = None,
    pos_weight: str | Sequence[float] | None = None,
    balanced: bool = False,
    config: str | Path | None = None,
    epochs: int | None = None,
    max_steps: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    precision: str | None = None,
    devices: int | None = None,
    seed: int | None = None,
    backbone: str | None = None,
    img_size: int | None = None,
    contract: str | None = None,
    modality: str | None = None,
    augment: str = "auto",
    label_fraction: float = 1.0,
    fraction_seed: int = 0,
    bootstrap: int = 1000,
    bootstrap_seed: int = 0,
    cache: str | Path | None = None,
    skip_bad: bool = False,
    train: dict[str, Any] | None = None,
    resume: bool = False,
    echo: Callable[[str], None] = print,
) -> FinetuneResult:
    """Fine-tune ``model`` on the manifest ``data`` into the run folder ``out`` (module docstring).

    ``train`` holds ``TrainConfig`` options; ``config`` (a YAML file of them) and explicit ``epochs``, ``max_steps``,
    ``batch_size``, ``lr``, ``precision``, ``devices`` and ``seed`` override it.
    ``resume=True`` continues the interrupted run in ``out`` with its saved options
    (then only those training options may be given, and only ones the engine allows).
    """
    out = Path(out)
    train_options = dict(train or {})  # `train` is the training subset below
    explicit = given(epochs=epochs, max_steps=max_steps, batch_size=batch_size, lr=lr, precision=precision,
                     devices=devices, seed=seed)
    saved_train: dict[str, Any] | None = None
    if resume:
        cfg, saved_train = load_run_finetune_config(out)
    elif RunDir(out).last.is_file() or (out / "finetune.json").is_file():
        raise ConfigError(f"{out} already holds a fine-tuning run; resume it or choose another folder")
    else:
        if model is None or data is None:
            raise ConfigError("fine-tuning needs a model and a data manifest (or resume=True on a run folder)")
        overrides = {**train_options, **train_overrides(config, **explicit)}
        cfg = build_config(
            FinetuneConfig, model=absolute_path(model), data=absolute_path(data), mode=mode, preset=preset,
            rank=rank, alpha=alpha, lora_dropout=lora_dropout, layer_decay=layer_decay, task=task,
            findings=list(findings) if findings else None,
            pos_weight=list(pos_weight) if pos_weight is not None and not isinstance(pos_weight, str) else pos_weight,
            balanced=balanced, backbone=backbone, img_size=img_size, contract=contract, modality=modality,
            augment=augment, label_fraction=label_fraction, fraction_seed=fraction_seed,
            cache=str(Path(cache).expanduser().resolve()) if cache else None, skip_bad=skip_bad,
            bootstrap=bootstrap, bootstrap_seed=bootstrap_seed, train=overrides,
        )  # fmt: skip
        build_config(TrainConfig, **{"lr": 1.0, "min_lr": 0.0, **cfg.train})  # unknown or bad keys fail now
    classifier = classifier_config(cfg)

    torch.manual_seed(int(cfg.train.get("seed", 0)))  # a random init is drawn with the run's seed
    encoder = load_encoder(cfg.model, backbone=cfg.backbone, img_size=cfg.img_size)
    check_lora_targets(encoder, cfg.mode, cfg.preset)
    prepared = prepare_data(cfg.data, encoder, findings=cfg.findings, task=cfg.task, contract=cfg.contract,
                            modality=cfg.modality, cache=cfg.cache, skip_bad=cfg.skip_bad)  # fmt: skip
    if isinstance(cfg.pos_weight, list) and len(cfg.pos_weight) != len(prepared.names):
        raise ConfigError(f"pos_weight has {len(cfg.pos_weight)} values for {len(prepared.names)} findings")
    full_train = prepared.splits["train"]
    n_patients = int(full_train.table["patient_id"].nunique())
    if not holds_a_patient(cfg.label_fraction, n_patients):
        raise BadInputError(f"label fraction {cfg.label_fraction:g} of {n_patients} training patients holds no "
                            f"patient; use at least {0.5 / n_patients:.2g}")  # fmt: skip
    plan = fraction_plan(full_train, [cfg.label_fraction], seed=cfg.fraction_seed, names=prepared.names)
    train = plan.subset(full_train, cfg.label_fraction)
    counts = subset_counts(train, full_train)
    echo(f"training on {counts['n_train_images']} images of {counts['n_train_patients']} patients "
         f"({counts['patient_fraction']:.1%} of the training patients, {counts['actual_fraction']:.1%} of its images; "
         f"label fraction {cfg.label_fraction:g}, "
         f"seed {cfg.fraction_seed})")  # fmt: skip

    if saved_train is not None:
        train_config = build_config(TrainConfig, **{**saved_train, **train_options, **explicit})
    else:
        train_config = build_train_config(cfg.mode, len(train), cfg.train)
    augment_name = cfg.augment if cfg.augment != "auto" else auto_augment(prepared.contract.modality)
    policy = label_policy(None)  # uncertain and unknown labels masked
    record = {
        "mode": cfg.mode, "model_ref": cfg.model, "init_weights": encoder.weights_source,
        "contract": prepared.contract.to_dict(), "augment": augment_name, "task": prepared.task,
        "manifest_hash": prepared.manifest.hash, "label_fraction": cfg.label_fraction,
        "fraction_seed": cfg.fraction_seed, **counts,
        "label_policy": policy.name if prepared.task == "multilabel" else None,
    }  # fmt: skip
    if not resume:
        out.mkdir(parents=True, exist_ok=True)
        write_run_config(out, {"finetune": cfg.to_dict(), "train": train_config.to_dict(), "record": record},
                         manifest_hash=prepared.manifest.hash, seed=train_config.seed)  # fmt: skip
        plan.save(out / "label_fraction.json")
    result, _ = finetune_and_score(
        encoder.model, prepared, train, classifier=classifier, train_config=train_config, run_dir=out,
        augment=augment_name, bootstrap=cfg.bootstrap, bootstrap_seed=cfg.bootstrap_seed, pos_weight=cfg.pos_weight, balanced=cfg.balanced,
        label_policy=policy, resume="auto" if resume else False, run_record=record, echo=echo,
    )  # fmt: skip
    return result  # finetune printed the test macro AUROC with its CI


def classifier_config(cfg: FinetuneConfig, num_classes: int = 1) -> ClassifierConfig:
    """The ``ClassifierConfig`` of a run (``num_classes`` is set once the findings are known)."""
    from greenfm.adapt.lora import get_preset

    get_preset(cfg.preset)  # an unknown preset lists the valid ones before any work
    return build_config(ClassifierConfig, num_classes=num_classes, mode=cfg.mode, preset=cfg.preset, rank=cfg.rank,
                        alpha=cfg.alpha, dropout=cfg.lora_dropout, layer_decay=cfg.layer_decay)  # fmt: skip


def check_lora_targets(encoder: Encoder, mode: str, preset: str) -> None:
    """A LoRA preset naming modules the model lacks, or LoRA on a CNN, fails before any data is read."""
    if mode != "lora":
        return
    if encoder.family == "map3d":
        name = encoder.spec.get("greenfm_name") or encoder.spec.get("name", type(encoder.model).__name__)
        raise ConfigError(f"LoRA applies to ViTs, and {name} is a 3-D CNN: use --mode linear or --mode full")
    from greenfm.adapt.lora import get_preset, missing_targets

    missing = missing_targets(encoder.model, get_preset(preset).targets)
    if missing:
        raise ConfigError(f"LoRA preset {preset!r} targets module(s) {', '.join(missing)} that this "
                          f"{encoder.spec.get('name', type(encoder.model).__name__)} does not have")  # fmt: skip


def load_run_finetune_config(run_dir: str | Path) -> tuple[FinetuneConfig, dict[str, Any]]:
    """The options and training config a fine-tuning run folder was started with (for resume)."""
    saved = read_run_config(run_dir, "finetune", "fine-tuning")
    return FinetuneConfig(**saved["finetune"]), dict(saved.get("train", {}))


def _json_safe(value: Any) -> Any:
    from greenfm.evaluate.metrics import json_safe

    return json_safe(value)


__all__ = [
    "FinetuneConfig",
    "FinetuneData",
    "finetune_and_score",
    "prepare_data",
    "run_finetune",
]
