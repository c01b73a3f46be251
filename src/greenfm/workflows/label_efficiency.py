"""``greenfm evaluate label-efficiency``: test AUROC against the share of labelled training patients.

A study is a grid of cells, fractions x seeds x modes. Per seed, one nested,
patient-grouped plan of the training split is drawn (``nested_label_fractions``:
1% inside 10% inside 100%), and every mode trains on the same subsets; val and test
are never reduced. ``linear`` is by default the RETFound-Green logistic-regression
probe (METHODS 7.1) on embeddings computed once for the whole manifest
(``linear_via="finetune"`` trains a linear head instead); ``lora`` and ``full``
fine-tune (``greenfm.workflows.finetune``). Each cell reports test AUROC per
finding and macro, with 95% patient-bootstrap CIs drawn from the same resamples
(``bootstrap_seed``) for every cell. A random init (``model="random"``) is drawn once
per study (torch seed 0): seeds vary the subsets and the training, not the init.

Finished cells are appended to ``cells.jsonl`` as they finish and never recomputed:
rerunning the same command on the same ``out`` continues where it stopped (an
interrupted fine-tune resumes from its checkpoint). Files in ``out``:

``label_efficiency.csv`` / ``.json``  rows in the schema of ``greenfm.report.label_efficiency``
``label_efficiency_summary.csv``       mean, std and range over seeds per (mode, fraction)
``label_efficiency.png``               the curves, with CI bands and seeds as dots
``fraction_plans.json``                each seed's nested subsets and actual counts
``embeddings.parquet``                 the cached embeddings (linear probe)
``runs/<mode>-f<fraction>-s<seed>/``   each cell's run: val/test ``predictions.parquet`` (what
                                       ``compare_studies`` pairs), and for fine-tunes the run files
                                       (weights removed unless ``keep_weights``)

A fraction that rounds to no training patient, or a subset in which no finding has
both classes, is skipped, counted and listed (``skipped_cells``).
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from greenfm.adapt.layer_decay import DEFAULT_LAYER_DECAY
from greenfm.adapt.train_defaults import auto_augment, build_train_config
from greenfm.config import build_config, train_overrides
from greenfm.data.tasks import fraction_plan, holds_a_patient, subset_counts, trainable_findings
from greenfm.errors import BadInputError, ConfigError
from greenfm.workflows.adapt_config import LabelEfficiencyConfig
from greenfm.workflows.finetune import check_lora_targets, classifier_config, finetune_and_score
from greenfm.workflows.finetune_data import FinetuneData, absolute_path, prepare_data
from greenfm.workflows.inputs import load_encoder
from greenfm.workflows.label_efficiency_results import (
    CELLS,
    PLANS,
    LabelEfficiencyResult,
    append_cell,
    cell_key,
    check_study,
    metric_rows,
    mode_label,
    read_cells,
    skipped_row,
    write_outputs,
)

EMBEDDINGS = "embeddings.parquet"


def run_label_efficiency(
    *,
    model: str | Path,
    data: str | Path,
    out: str | Path,
    fractions: Sequence[float] = (0.01, 0.1, 1.0),
    seeds: Sequence[int] = (0, 1, 2),
    modes: Sequence[str] = ("linear", "lora", "full"),
    linear_via: str = "probe",
    bootstrap: int = 1000,
    bootstrap_seed: int = 0,
    task: str = "auto",
    findings: Sequence[str] | None = None,
    preset: str = "med-peft",
    rank: int = 8,
    alpha: float = 32,
    lora_dropout: float = 0.1,
    layer_decay: float = DEFAULT_LAYER_DECAY,
    pos_weight: str | Sequence[float] | None = None,
    balanced: bool = False,
    config: str | Path | None = None,
    epochs: int | None = None,
    max_steps: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    precision: str | None = None,
    devices: int | None = None,
    backbone: str | None = None,
    img_size: int | None = None,
    contract: str | None = None,
    modality: str | None = None,
    augment: str = "auto",
    pool: str | None = None,
    cache: str | Path | None = None,
    skip_bad: bool = False,
    keep_weights: bool = False,
    train: dict[str, Any] | None = None,
    echo: Callable[[str], None] = print,
) -> LabelEfficiencyResult:
    """Run (or continue) a label-efficiency study into ``out``; see the module docstring.

    ``train`` holds ``TrainConfig`` options for every fine-tune; ``config`` (a YAML file of them) and explicit
    ``epochs``, ``max_steps``, ``batch_size``, ``lr``, ``precision`` and ``devices`` override it. A
    cell's training seed is its fraction seed.
    """
    out = Path(out)
    train = {**(train or {}), **train_overrides(config, epochs=epochs, max_steps=max_steps, batch_size=batch_size, lr=lr,
                            precision=precision, devices=devices)}  # fmt: skip
    cfg = build_config(
        LabelEfficiencyConfig, model=absolute_path(model), data=absolute_path(data),
        fractions=[float(f) for f in fractions], seeds=[int(s) for s in seeds], modes=list(modes),
        linear_via=linear_via, bootstrap=bootstrap,
        bootstrap_seed=bootstrap_seed, task=task, findings=list(findings) if findings else None, preset=preset,
        rank=rank, alpha=alpha, lora_dropout=lora_dropout, layer_decay=layer_decay,
        pos_weight=list(pos_weight) if pos_weight is not None and not isinstance(pos_weight, str) else pos_weight,
        balanced=balanced, backbone=backbone, img_size=img_size, contract=contract, modality=modality,
        augment=augment, pool=pool, cache=str(Path(cache).expanduser().resolve()) if cache else None,
        skip_bad=skip_bad, keep_weights=keep_weights, train=train,
    )  # fmt: skip
    if any(not 0 < f <= 1 for f in cfg.fractions):
        raise ConfigError(f"fractions must lie in (0, 1], got {cfg.fractions}")
    classifier = classifier_config(_finetune_view(cfg))  # validates preset and LoRA options up front
    out.mkdir(parents=True, exist_ok=True)
    check_study(out, cfg)

    torch.manual_seed(0)  # one random init per study (if random): seeds vary the subsets and the training
    encoder = load_encoder(cfg.model, backbone=cfg.backbone, img_size=cfg.img_size)
    if "lora" in cfg.modes:
        check_lora_targets(encoder, "lora", cfg.preset)
    prepared = prepare_data(cfg.data, encoder, findings=cfg.findings, task=cfg.task, contract=cfg.contract,
                            modality=cfg.modality, cache=cfg.cache, skip_bad=cfg.skip_bad)  # fmt: skip
    train = prepared.splits["train"]
    plans = {seed: fraction_plan(train, cfg.fractions, seed=seed, names=prepared.names) for seed in cfg.seeds}
    (out / PLANS).write_text(json.dumps({str(s): p.to_dict() for s, p in plans.items()}) + "\n")
    augment_name = cfg.augment if cfg.augment != "auto" else auto_augment(prepared.contract.modality)
    study = _Study(cfg, out, encoder, prepared, plans, classifier, augment_name, echo)

    records = read_cells(out / CELLS)
    reused, ran = 0, 0
    for seed in cfg.seeds:  # seed by seed: an interrupted study holds whole curves first
        for fraction in sorted(cfg.fractions):
            for mode in cfg.modes:
                key = cell_key(mode_label(mode, cfg.linear_via), fraction, seed)
                if key in records:
                    reused += 1
                    continue
                records[key] = study.run_cell(mode, fraction, seed)
                ran += records[key]["status"] == "done"
                append_cell(out / CELLS, records[key])
                write_outputs(out, records, cfg, prepared, plans, plot=False)
    result = write_outputs(out, records, cfg, prepared, plans, plot=True)
    result.cells_run, result.cells_reused = ran, reused
    echo(f"{ran} cell(s) run, {reused} reused; test set {len(prepared.splits['test'])} images\n{result.table()}")
    echo(_compute_summary(out, records))
    echo("wrote " + ", ".join(str(path) for key, path in result.files.items() if key != "cells"))
    return result


def _compute_summary(out: Path, records: dict[str, dict[str, Any]]) -> str:
    """One line: the compute of every fine-tuned cell of the study, summed from their ledgers."""
    from greenfm.engine.ledger import UNAVAILABLE, ledger_totals

    ledgers = []
    for record in records.values():
        path = out / str(record.get("run_dir", "")) / "compute.json"
        if record.get("status") == "done" and record.get("mode") != "linear-probe" and path.is_file():
            ledgers.append(json.loads(path.read_text()))
    if not ledgers:
        return "study compute: no fine-tuned cell (the probes' cost is the one embedding pass)"
    totals = ledger_totals(ledgers)

    def shown(key: str, fmt: str) -> str:
        return UNAVAILABLE if totals[key] == UNAVAILABLE else fmt.format(totals[key])

    return (f"study compute ({totals['runs']} fine-tuned cells): {shown('wall_time_s', '{:.0f}')} s wall, "
            f"{shown('device_hours', '{:.3g}')} device-hours, {shown('total_training_flops', '{:.3g}')} training "
            f"FLOPs, energy {shown('energy_kwh', '{:.3g} kWh')}; per cell in runs/*/compute.json")  # fmt: skip


@dataclass
class _Study:
    """What every cell of one study shares: options, encoder, data, fraction plans."""

    cfg: LabelEfficiencyConfig
    out: Path
    encoder: Any
    prepared: FinetuneData
    plans: dict[int, Any]
    classifier: Any
    augment: str
    echo: Callable[[str], None]
    probe_inputs: tuple[np.ndarray, pd.DataFrame] | None = None

    def run_cell(self, mode: str, fraction: float, seed: int) -> dict[str, Any]:
        """One (mode, fraction, seed) cell: its record, with schema rows (a skip is a record too)."""
        cfg, prepared, echo = self.cfg, self.prepared, self.echo
        label = mode_label(mode, cfg.linear_via)
        train = prepared.splits["train"]
        subset = self.plans[seed].subset(train, fraction)
        counts = subset_counts(subset, train)
        base = {"key": cell_key(label, fraction, seed), "mode": label, "fraction": fraction, "seed": seed, **counts}
        reason = _skip_reason(fraction, int(train.table["patient_id"].nunique()), subset, prepared)
        if reason:
            echo(f"skipped {label} at {fraction:g}, seed {seed}: {reason}")
            return {**base, "status": "skipped", "reason": reason, "rows": [skipped_row(base, reason, prepared)]}
        echo(f"{label}: fraction {fraction:g}, seed {seed}: {counts['n_train_images']} images "
             f"of {counts['n_train_patients']} patients")  # fmt: skip
        started = time.perf_counter()
        if mode == "linear" and cfg.linear_via == "probe":
            self.probe_inputs = self.probe_inputs or _embeddings(self.out, self.encoder, prepared, cfg, echo)
            run_dir = self.out / "runs" / f"{label}-f{fraction:g}-s{seed}"
            metrics, skipped, extra = _probe_cell(self.probe_inputs, prepared, self.plans[seed].rows[fraction], cfg,
                                                  run_dir)  # fmt: skip
            extra["run_dir"] = str(run_dir.relative_to(self.out))
        else:
            metrics, skipped, extra = _finetune_cell(self, subset, mode, seed, fraction)
        seconds = time.perf_counter() - started
        echo(f"  test macro AUROC {_fmt(metrics.get('macro_auroc'))} {_fmt_ci(metrics.get('macro_auroc_ci'))} "
             f"({seconds:.1f} s)")  # fmt: skip
        rows = metric_rows(base | {"seconds": seconds}, metrics, prepared.names, skipped)
        return {**base, "status": "done", "seconds": seconds, **extra, "rows": rows}


# ----------------------------------------------------------------------------- cells


def _skip_reason(fraction: float, n_patients: int, subset, prepared: FinetuneData) -> str | None:
    if not holds_a_patient(fraction, n_patients):
        return f"fraction {fraction:g} of {n_patients} training patients holds no patient"
    try:
        names, skipped = trainable_findings(subset.labels(prepared.names), prepared.names, prepared.task)
    except BadInputError as err:
        return str(err)
    if not names:
        return "no finding has both classes in this subset (" + "; ".join(f"{k}: {v}" for k, v in skipped.items()) + ")"
    return None


def _probe_cell(inputs, prepared: FinetuneData, train_rows: np.ndarray, cfg: LabelEfficiencyConfig, run_dir: Path):
    """The RETFound-Green probe fitted on one subset of the training rows; val and test whole.

    Its ``probe.json`` and val/test ``predictions.parquet`` go to ``run_dir``, as a fine-tune's do."""
    from greenfm.adapt.linear_probe import run_probe

    x, table = inputs
    split = table["split"].to_numpy(dtype=object)
    train_positions = np.flatnonzero(split == "train")[train_rows]
    rows = np.concatenate([train_positions, np.flatnonzero(split == "val"), np.flatnonzero(split == "test")])
    subset = table.iloc[rows].reset_index(drop=True)
    names, skipped = trainable_findings(subset.loc[subset["split"] == "train", prepared.names].to_numpy(float),
                                        prepared.names, prepared.task)  # fmt: skip
    task = "multiclass" if prepared.task == "multiclass" else ("binary" if len(names) == 1 else "multilabel")
    result = run_probe(x[rows], subset, findings=names, protocol="retfound-green", task=task,
                       bootstrap=cfg.bootstrap, seed=cfg.bootstrap_seed)  # fmt: skip
    skipped.update(result.skipped)
    result.save(run_dir)
    return result.test.to_dict(), skipped, {"protocol": "retfound-green"}


def _finetune_cell(study: _Study, subset, mode: str, seed: int, fraction: float):
    """One fine-tuning run on one subset; its weights are removed afterwards unless ``keep_weights``."""
    cfg, prepared, out = study.cfg, study.prepared, study.out
    train_config = build_train_config(mode, len(subset), {"progress_bar": False, "show_ledger": False, **cfg.train, "seed": seed})
    run_dir = out / "runs" / f"{mode_label(mode, cfg.linear_via)}-f{fraction:g}-s{seed}"
    record = {"study": str(out), "label_fraction": fraction, "fraction_seed": seed, "mode": mode,
              "manifest_hash": prepared.manifest.hash, "contract": prepared.contract.to_dict()}  # fmt: skip

    def echo(line: str) -> None:  # parameter counts and skipped findings only; the cell prints its result
        if line.startswith(("trainable", "skipped")):
            study.echo("  " + line)

    result, skipped = finetune_and_score(
        copy.deepcopy(study.encoder.model), prepared, subset,
        classifier=study.classifier.model_copy(update={"mode": mode}), train_config=train_config, run_dir=run_dir,
        augment=study.augment, bootstrap=cfg.bootstrap,
        bootstrap_seed=cfg.bootstrap_seed, pos_weight=cfg.pos_weight, balanced=cfg.balanced, resume="auto",
        run_record=record, echo=echo,
    )  # fmt: skip
    compute = run_dir / "compute.json"
    if compute.is_file():
        from greenfm.engine.ledger import ledger_line

        study.echo("  compute: " + ledger_line(json.loads(compute.read_text())))
    if not cfg.keep_weights:
        for folder in ("checkpoints", "exported"):
            shutil.rmtree(run_dir / folder, ignore_errors=True)
    extra = {"run_dir": str(run_dir.relative_to(out)), "best_epoch": result.best_epoch,
             "trainable_parameters": result.parameters.get("trainable"),
             "trainable_percent": result.parameters.get("trainable_percent"),
             "epochs": train_config.epochs, "batch_size": train_config.batch_size, "lr": train_config.lr}  # fmt: skip
    return result.test or {}, skipped, extra


def _embeddings(out: Path, encoder, prepared: FinetuneData, cfg: LabelEfficiencyConfig, echo):
    """(x, table): embeddings of every usable manifest row, computed once and kept in ``out``."""
    from greenfm.data.embeddings import Embeddings, align_embeddings, read_embeddings, write_embeddings
    from greenfm.engine.embed import embed_dataset

    table = prepared.manifest.table
    path = out / EMBEDDINGS
    if path.is_file():
        stored = read_embeddings(path)
        same = stored.metadata.get("manifest_hash") == prepared.manifest.hash
        if same and stored.metadata.get("pool") == encoder.resolve_pool(cfg.pool):
            return align_embeddings(stored, table, source=str(path)), table
    started = time.perf_counter()
    dataset = prepared.dataset(prepared.manifest, prepared.names)
    x = embed_dataset(encoder, dataset, pool=cfg.pool, batch_size=256)
    echo(f"embedded {len(x)} images ({x.shape[1]}-d) in {time.perf_counter() - started:.1f} s")
    metadata = {"model": encoder.spec, "weights": encoder.weights_source, "pool": encoder.resolve_pool(cfg.pool),
                "contract": prepared.contract.to_dict(), "manifest_hash": prepared.manifest.hash,
                "model_ref": cfg.model}  # fmt: skip
    write_embeddings(path, Embeddings(dataset.ids, dataset.patient_ids, dataset.paths, x, metadata))
    return x, table


def _finetune_view(cfg: LabelEfficiencyConfig):
    from greenfm.workflows.finetune import FinetuneConfig

    return FinetuneConfig(model=cfg.model, data=cfg.data, preset=cfg.preset, rank=cfg.rank, alpha=cfg.alpha,
                          lora_dropout=cfg.lora_dropout, layer_decay=cfg.layer_decay)  # fmt: skip


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _fmt_ci(ci) -> str:
    return f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""


def _json_safe(value: Any) -> Any:
    from greenfm.evaluate.metrics import json_safe

    return json_safe(value)
