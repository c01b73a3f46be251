"""The work of one scaling-study cell: the shared init, one pretraining run, one evaluation.

* ``save_init``: every recipe's starting towers, built once (seeded) and exported to
  ``init/<recipe>/``. Every cell of that recipe starts from that folder (towers loaded
  strictly), so all sizes share one init, and the folder itself is the n = 0 model.
* ``pretrain_cell``: ``greenfm pretrain`` on one subset with the study's steps and batch;
  a run that stopped after a checkpoint resumes from it, a run that stopped before one
  starts again, a finished run is left alone.
* ``evaluate_cell``: the frozen-encoder evaluations, each written to its own folder with
  its val/test ``predictions.parquet`` (what the paired comparisons and fits read).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from greenfm.config import build_config
from greenfm.data.manifest import Manifest
from greenfm.engine.run_dir import RunDir
from greenfm.errors import ConfigError
from greenfm.methods.registry import get_method
from greenfm.workflows.pretrain_config import PretrainConfig
from greenfm.workflows.scaling_config import ScalingConfig

log = logging.getLogger(__name__)
LEDGER_KEYS = ("wall_time_s", "device_hours", "total_training_flops", "training_flops_per_sample",
               "training_flops_convention", "energy_kwh", "samples_seen", "optimizer_steps", "device_type",
               "device_name")  # fmt: skip


def method_options(config: ScalingConfig, recipe: str) -> dict[str, Any]:
    """The recipe's ``method:`` options: ``method[recipe]`` when the mapping is keyed by recipe, else all of it."""
    if config.method and all(isinstance(v, dict) for v in config.method.values()):
        return dict(config.method.get(recipe, {}))
    return dict(config.method)


def has_text(recipe: str) -> bool:
    return "text" in get_method(recipe).towers.values()


# ----------------------------------------------------------------------------- training plan


@dataclass(frozen=True)
class CellTraining:
    """What every cell of one recipe trains with: the same steps, batch and schedule for every size."""

    steps: int
    batch_size: int
    train: dict[str, Any]  # TrainConfig options common to every size

    def for_size(self, n_images: int) -> dict[str, Any]:
        """The cell's options: full batches only (``drop_last``, when the subset holds one) and enough
        epochs that ``max_steps`` ends the run at exactly ``steps``."""
        full = n_images >= self.batch_size
        per_epoch = n_images // self.batch_size if full else 1
        return {**self.train, "drop_last": full, "max_steps": self.steps,
                "epochs": max(1, math.ceil(self.steps / per_epoch))}  # fmt: skip


def cell_training(config: ScalingConfig, recipe: str) -> CellTraining:
    """Steps, batch and a per-step schedule spanning exactly ``steps`` (warm-up scaled from the recipe's)."""
    for key in ("epochs", "max_steps"):
        if key in config.train:
            raise ConfigError(f"train.{key} is set by the study (the same --steps for every size); remove it")
    recipe_train = get_method(recipe).default_train_config(**method_options(config, recipe))
    given = dict(config.train)
    batch = int(given.get("batch_size") or recipe_train.get("batch_size") or 128)
    steps = config.steps
    if "warmup" in given:
        warmup = int(given["warmup"])
    elif recipe_train.get("schedule_interval", "step") == "step":
        warmup = min(int(recipe_train.get("warmup") or 0), steps // 10)
    else:  # a warm-up in epochs keeps its share of the recipe's horizon
        horizon = recipe_train.get("t_initial") or recipe_train.get("epochs") or 1
        warmup = round(steps * (recipe_train.get("warmup") or 0) / horizon)
    warmup = max(0, min(warmup, steps - 1))
    train = {
        "progress_bar": False, "show_ledger": False, "checkpoint_every_epochs": None,
        "checkpoint_every_steps": max(1, steps // 5),
        **given,
        "batch_size": batch, "schedule_interval": "step", "t_initial": steps, "warmup": warmup,
    }  # fmt: skip
    if train.get("t_initial") != steps:
        raise ConfigError("train.t_initial is set by the study (the schedule spans --steps)")
    return CellTraining(steps, batch, train)


# ----------------------------------------------------------------------------- init


def save_init(config: ScalingConfig, recipe: str, manifest: Manifest, folder: Path, seed: int) -> Path:
    """Build the recipe's starting towers once and export them to ``folder/exported`` (kept if present)."""
    import torch

    from greenfm.models.export import export_towers
    from greenfm.workflows.inputs import encoder_contract
    from greenfm.workflows.towers import image_tower, init_heads, text_tower

    exported = folder / "exported"
    if (exported / "config.json").is_file() and (exported / "model.safetensors").is_file():
        return folder
    recipe_cls = get_method(recipe)
    method_config = build_config(recipe_cls.Config, **method_options(config, recipe))
    init = config.init or recipe_cls.recommended_init(config.backbone)
    torch.manual_seed(seed)  # a random init follows the training seed, as in pretrain
    towers: dict[str, Any] = {"image": image_tower(init, config.backbone, config.img_size)}
    if has_text(recipe):
        towers["text"] = text_tower(init, config.text_tower, pool=config.text_pool, max_length=config.text_max_length)
    contract = encoder_contract(towers["image"], config.contract, modality=config.modality, data=manifest)
    model = recipe_cls.from_towers(towers, method_config, findings=list(manifest.findings), heads=init_heads(init))
    record = {"recipe": recipe, "scaling_init": True, "init_weights": towers["image"].weights_source,
              "backbone": towers["image"].spec.get("name"), "seed": seed}  # fmt: skip
    shutil.rmtree(folder, ignore_errors=True)
    export_towers(model.export_towers(), exported, heads=model.export_heads(), preprocessing=contract, metadata=record)
    (folder / "init.json").write_text(json.dumps({"init": str(init), "recipe": recipe, "seed": seed}, indent=2) + "\n")
    return folder


# ----------------------------------------------------------------------------- pretraining


def pretrain_cell(
    config: ScalingConfig, recipe: str, subset_manifest: Path, init_folder: Path, run_dir: Path,
    training: CellTraining, n_images: int, echo: Callable[[str], None],
) -> dict[str, Any]:  # fmt: skip
    """Train (or finish training) one cell; returns its steps, epochs and ledger figures."""
    from greenfm.workflows.pretrain import run_pretrain

    cell = PretrainConfig(
        recipe=recipe, data=str(subset_manifest), init=str(init_folder), backbone=None, img_size=None,
        contract=None, modality=config.modality, augment=config.augment, source_size=config.source_size,
        splits=["train"], text_tower=None, text_pool=config.text_pool, text_max_length=config.text_max_length,
        text_from_labels=config.text_from_labels, vocab=config.vocab, cache=config.cache, skip_bad=config.skip_bad,
        method=method_options(config, recipe), train=training.for_size(n_images),
    )  # fmt: skip
    run = RunDir(run_dir)
    if not _finished(run_dir):
        if run.last.is_file():
            echo(f"  resuming the interrupted pretraining in {run_dir}")
            run_pretrain(cell, run_dir, resume=True)
        else:
            shutil.rmtree(run_dir, ignore_errors=True)  # stopped before its first checkpoint: start again
            run_pretrain(cell, run_dir)
    if not config.keep_weights:
        shutil.rmtree(run.checkpoints, ignore_errors=True)
    ledger = json.loads(run.compute.read_text()) if run.compute.is_file() else {}
    samples = ledger.get("samples_seen")
    return {
        "steps": ledger.get("optimizer_steps", training.steps), "batch_size": training.batch_size,
        "epochs": samples / n_images if isinstance(samples, (int, float)) else training.steps * training.batch_size / n_images,
        "compute": {key: ledger.get(key) for key in LEDGER_KEYS if key in ledger},
    }  # fmt: skip


def _finished(run_dir: Path) -> bool:
    exported = run_dir / "exported"
    return all((p).is_file() for p in (exported / "config.json", exported / "model.safetensors", run_dir / "compute.json"))


# ----------------------------------------------------------------------------- evaluation


@dataclass
class EvalData:
    """The evaluation manifest and the probe's rows (the same for every cell)."""

    path: Path
    manifest: Manifest
    probe_rows: Manifest  # train prefix (probe_train_images) + val + test


def evaluation_data(config: ScalingConfig, path: Path, manifest: Manifest) -> EvalData:
    from greenfm.workflows.scaling_subsets import nested_patient_subsets

    if not manifest.has_splits or not (manifest.table["split"] == "test").any():
        raise ConfigError(f"{path}: the evaluations need a patient-level test split (`greenfm data split`)")
    table = manifest.table
    keep = table["split"].isin(["val", "test"]).to_numpy()
    train = (table["split"] == "train").to_numpy()
    if config.probe_train_images is not None and train.any():
        plan = nested_patient_subsets(table.loc[train, "patient_id"], [config.probe_train_images],
                                      seed=config.subset_seed)  # fmt: skip
        train = train & plan.mask(table["patient_id"], plan.subsets[0])
    return EvalData(path, manifest, manifest.subset(keep | train))


def evaluate_cell(
    evaluation: str, model: Path, out: Path, config: ScalingConfig, data: EvalData, echo: Callable[[str], None],
) -> list[dict[str, Any]]:  # fmt: skip
    """Run one evaluation of one model; returns its points (one per metric curve)."""
    if evaluation == "probe":
        return [_probe(model, out / "probe", config, data)]
    if evaluation == "zeroshot":
        return [_zeroshot(model, out / "zeroshot", config, data)]
    if evaluation == "label-efficiency":
        return _label_efficiency(model, out / "label-efficiency", config, data)
    raise ConfigError(f"unknown evaluation '{evaluation}'")


def _point(evaluation: str, metrics: Any, predictions: Path, out_root: Path, **extra: Any) -> dict[str, Any]:
    ci = metrics.macro_auroc_ci
    return {"evaluation": evaluation, "metric": "test macro AUROC", "value": metrics.macro_auroc,
            "ci_low": ci[0] if ci else None, "ci_high": ci[1] if ci else None, "n_evaluable": metrics.n_evaluable,
            "n_classes": metrics.n_classes, "predictions": str(predictions.relative_to(out_root)), **extra}  # fmt: skip


def _probe(model: Path, out: Path, config: ScalingConfig, data: EvalData) -> dict[str, Any]:
    """RETFound-Green linear probe (METHODS 7.1) on the frozen encoder: fit on train, test macro AUROC."""
    from greenfm.adapt.linear_probe import run_probe
    from greenfm.data.cache import default_cache_root
    from greenfm.engine.embed import embed_dataset
    from greenfm.workflows.inputs import encoder_contract, image_dataset, load_encoder

    encoder = load_encoder(model)
    contract = encoder_contract(encoder, None, data=data.manifest)
    dataset = image_dataset(data.probe_rows, contract, cache_root=config.cache or default_cache_root(),
                            skip_bad=config.skip_bad, labels=False)  # fmt: skip
    x = embed_dataset(encoder, dataset, batch_size=256)
    table = dataset.manifest.table
    result = run_probe(x, table, protocol="retfound-green", bootstrap=config.bootstrap, seed=config.bootstrap_seed)
    result.save(out)
    return _point("probe", result.test, out / "predictions.parquet", out.parents[2],
                  n_probe_train_images=result.counts.get("n_train_images"))  # fmt: skip


def _zeroshot(model: Path, out: Path, config: ScalingConfig, data: EvalData) -> dict[str, Any]:
    from greenfm.workflows.image_text_config import ZeroshotConfig
    from greenfm.workflows.image_text_eval import run_zeroshot

    zs = ZeroshotConfig(model=str(model), data=str(data.path), split="test", cache=config.cache,
                        skip_bad=config.skip_bad, prompts=config.prompts, resamples=config.bootstrap,
                        seed=config.bootstrap_seed)  # fmt: skip
    result = run_zeroshot(zs, out)
    return _point("zeroshot", result["metrics"], out / "predictions.parquet", out.parents[2], prompts=config.prompts)


def _label_efficiency(model: Path, out: Path, config: ScalingConfig, data: EvalData) -> list[dict[str, Any]]:
    """Linear probes at each label fraction (one seed): one point per fraction."""
    from greenfm.workflows.label_efficiency import run_label_efficiency
    from greenfm.workflows.label_efficiency_results import mode_label

    run_label_efficiency(model=str(model), data=str(data.path), out=out, fractions=config.fractions, seeds=[0],
                         modes=["linear"], bootstrap=config.bootstrap, bootstrap_seed=config.bootstrap_seed,
                         cache=config.cache, skip_bad=config.skip_bad, echo=lambda _line: None)  # fmt: skip
    table = pd.read_csv(out / "label_efficiency.csv")
    macro = table[table["finding"] == "macro"]
    points = []
    for fraction in config.fractions:
        row = macro[np.isclose(macro["fraction"], fraction)]
        folder = out / "runs" / f"{mode_label('linear')}-f{fraction:g}-s0"
        value = row["auroc"].iloc[0] if len(row) else None
        points.append({
            "evaluation": f"label-efficiency@{fraction:g}", "metric": "test macro AUROC",
            "value": None if value is None or pd.isna(value) else float(value),
            "ci_low": _num(row["ci_low"].iloc[0]) if len(row) else None,
            "ci_high": _num(row["ci_high"].iloc[0]) if len(row) else None,
            "predictions": str((folder / "predictions.parquet").relative_to(out.parents[2]))
            if (folder / "predictions.parquet").is_file() else None,
            "fraction": fraction,
        })  # fmt: skip
    return points


def _num(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)
