"""``greenfm evaluate label-efficiency``: test AUROC against the share of labelled training patients.

A study is a grid of cells, fractions x seeds x modes. Per seed, one nested,
patient-grouped plan of the training split is drawn (``nested_label_fractions``:
1% inside 10% inside 100%), and every mode trains on the same subsets; val and test
are never reduced. ``linear`` is by default the RETFound-Green logistic-regression
probe (METHODS 7.1) on embeddings computed once for the whole manifest
(``linear_via="finetune"`` trains a linear head instead); ``lora`` and ``full``
fine-tune (``greenfm.workflows.finetune``). Each cell reports test AUROC per
finding and macro, with 95% patient-bootstrap CIs drawn from the same resamples
(``bootstrap_seed``) for every cell.

Finished cells are appended to ``cells.jsonl`` as they finish and never recomputed:
rerunning the same command on the same ``out`` continues where it stopped (an
interrupted fine-tune resumes from its checkpoint). Files in ``out``:

``label_efficiency.csv`` / ``.json``  rows in the schema of ``greenfm.report.label_efficiency``
``label_efficiency_summary.csv``       mean, std and range over seeds per (mode, fraction)
``label_efficiency.png``               the curves, with CI bands and seeds as dots
``fraction_plans.json``                each seed's nested subsets and actual counts
``embeddings.parquet``                 the cached embeddings (linear probe)
``runs/<mode>-f<fraction>-s<seed>/``   each fine-tuning run (weights removed unless ``keep_weights``)

A fraction that rounds to no training patient, or a subset in which no finding has
both classes, is skipped, counted and listed (``skipped_cells``).
"""

from __future__ import annotations

import base64
import copy
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from greenfm.adapt.classifier import Mode
from greenfm.adapt.layer_decay import DEFAULT_LAYER_DECAY
from greenfm.config import GreenfmConfig, build_config, read_yaml
from greenfm.errors import BadInputError, ConfigError
from greenfm.workflows.finetune import (
    FinetuneData,
    absolute_path,
    auto_augment,
    build_train_config,
    check_lora_targets,
    classifier_config,
    finetune_and_score,
    fraction_plan,
    holds_a_patient,
    prepare_data,
    subset_counts,
    trainable_findings,
)
from greenfm.workflows.inputs import load_encoder

SCHEMA = "greenfm.label-efficiency/1"  # greenfm.report.label_efficiency.SCHEMA
MODE_LABELS = {"linear": "linear-probe", "lora": "lora", "full": "full-finetune"}
LINEAR_HEAD_LABEL = "linear-head"  # linear fine-tuned through the engine (linear_via="finetune")
CELLS, STUDY, PLANS, EMBEDDINGS = "cells.jsonl", "config.yaml", "fraction_plans.json", "embeddings.parquet"
CSV, JSON_FILE, SUMMARY, PLOT = "label_efficiency.csv", "label_efficiency.json", "label_efficiency_summary.csv", "label_efficiency.png"
# Options that may differ when a study is continued: they do not change any cell's result.
CONTINUABLE = frozenset({"fractions", "seeds", "modes", "keep_weights", "cache", "skip_bad"})


class LabelEfficiencyConfig(GreenfmConfig):
    """A label-efficiency study; saved in ``config.yaml`` and checked when the study is continued."""

    model: str = Field(..., description="Run folder, export folder, weights file (with backbone) or 'random'.")
    data: str = Field(..., description="Manifest with train / val / test splits.")
    fractions: list[float] = Field([0.01, 0.1, 1.0], min_length=1, description="Shares of training patients.")
    seeds: list[int] = Field([0, 1, 2], min_length=1, description="Seeds of the nested draw and of training.")
    modes: list[Mode] = Field(["linear", "lora", "full"], min_length=1, description="Adaptations compared.")
    linear_via: Literal["probe", "finetune"] = Field("probe", description="linear: logistic probe or trained head.")
    bootstrap: int = Field(1000, ge=0, description="Patient-bootstrap resamples per cell (0: no CIs).")
    bootstrap_seed: int = Field(0, description="Seed of the resamples, shared by every cell.")
    task: Literal["auto", "binary", "multilabel", "multiclass"] = "auto"
    findings: list[str] | None = None
    preset: str = "med-peft"
    rank: int = Field(8, ge=1)
    alpha: float = Field(32.0, gt=0)
    lora_dropout: float = Field(0.1, ge=0, lt=1)
    layer_decay: float = Field(DEFAULT_LAYER_DECAY, gt=0, le=1)
    pos_weight: Literal["balanced"] | list[float] | None = None
    balanced: bool = False
    backbone: str | None = None
    img_size: int | None = None
    contract: str | None = None
    modality: str | None = None
    augment: str = "auto"
    pool: str | None = Field(None, description="Embedding pooling for the probe (default: the encoder's).")
    cache: str | None = None
    skip_bad: bool = False
    keep_weights: bool = Field(False, description="Keep each fine-tuning run's checkpoints and exported weights.")
    train: dict[str, Any] = Field(default_factory=dict, description="TrainConfig overrides for every fine-tune.")


@dataclass
class LabelEfficiencyResult:
    """The study's rows (schema ``greenfm.label-efficiency/1``), its summary and what was done."""

    out: Path
    rows: pd.DataFrame
    summary: pd.DataFrame
    cells_run: int
    cells_reused: int
    skipped_cells: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)

    def table(self) -> str:
        """Plain text: mode x fraction, macro AUROC (mean over seeds) with the mean 95% CI and n images."""
        lines = [f"{'mode':<15} {'fraction':>8} {'images':>7} {'seeds':>5} {'macro AUROC':>11} {'95% CI':>15} {'seed sd':>7}"]
        for _, r in self.summary.iterrows():
            ci = f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if np.isfinite(r["ci_low"]) else ""
            sd = f"{r['auroc_std']:.3f}" if np.isfinite(r["auroc_std"]) else ""
            lines.append(f"{r['mode']:<15} {r['fraction']:>8g} {r['n_train_images']:>7.0f} {int(r['n_seeds']):>5} "
                         f"{r['auroc_mean']:>11.3f} {ci:>15} {sd:>7}")  # fmt: skip
        if self.skipped_cells:
            lines.append(f"{len(self.skipped_cells)} cell(s) skipped: "
                         + "; ".join(f"{c['mode']} {c['fraction']:g} seed {c['seed']}: {c['reason']}" for c in self.skipped_cells))  # fmt: skip
        return "\n".join(lines)


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
    echo: Callable[[str], None] = print,
) -> LabelEfficiencyResult:
    """Run (or continue) a label-efficiency study into ``out``; see the module docstring.

    ``config`` is a YAML file of ``TrainConfig`` overrides for every fine-tune; explicit
    ``epochs``, ``max_steps``, ``batch_size``, ``lr``, ``precision`` and ``devices`` override it. A
    cell's training seed is its fraction seed.
    """
    out = Path(out)
    train = {**(read_yaml(config) if config is not None else {}),
             **{k: v for k, v in dict(epochs=epochs, max_steps=max_steps, batch_size=batch_size, lr=lr, precision=precision,
                                      devices=devices).items() if v is not None}}  # fmt: skip
    cfg = build_config(
        LabelEfficiencyConfig, model=absolute_path(model), data=absolute_path(data), fractions=[float(f) for f in fractions],
        seeds=[int(s) for s in seeds], modes=list(modes), linear_via=linear_via, bootstrap=bootstrap,
        bootstrap_seed=bootstrap_seed, task=task, findings=list(findings) if findings else None, preset=preset,
        rank=rank, alpha=alpha, lora_dropout=lora_dropout, layer_decay=layer_decay,
        pos_weight=list(pos_weight) if pos_weight is not None and not isinstance(pos_weight, str) else pos_weight,
        balanced=balanced, backbone=backbone, img_size=img_size, contract=contract, modality=modality,
        augment=augment, pool=pool, cache=str(Path(cache).expanduser().resolve()) if cache else None, skip_bad=skip_bad,
        keep_weights=keep_weights, train=train,
    )  # fmt: skip
    if any(not 0 < f <= 1 for f in cfg.fractions):
        raise ConfigError(f"fractions must lie in (0, 1], got {cfg.fractions}")
    classifier = classifier_config(_finetune_view(cfg))  # validates preset and LoRA options up front
    out.mkdir(parents=True, exist_ok=True)
    _check_study(out, cfg)

    encoder = load_encoder(cfg.model, backbone=cfg.backbone, img_size=cfg.img_size)
    if "lora" in cfg.modes:
        check_lora_targets(encoder, "lora", cfg.preset)
    prepared = prepare_data(cfg.data, encoder, findings=cfg.findings, task=cfg.task, contract=cfg.contract,
                            modality=cfg.modality, cache=cfg.cache, skip_bad=cfg.skip_bad)  # fmt: skip
    full_train = prepared.splits["train"]
    n_patients = int(full_train.table["patient_id"].nunique())
    plans = {seed: fraction_plan(full_train, cfg.fractions, seed=seed, names=prepared.names) for seed in cfg.seeds}
    (out / PLANS).write_text(json.dumps({str(s): p.to_dict() for s, p in plans.items()}) + "\n")
    augment_name = cfg.augment if cfg.augment != "auto" else auto_augment(prepared.contract.modality)

    records = _read_cells(out / CELLS)
    reused, ran = 0, 0
    probe_inputs = None
    for seed in cfg.seeds:
        for fraction in sorted(cfg.fractions):
            for mode in cfg.modes:
                label = mode_label(mode, cfg.linear_via)
                key = cell_key(label, fraction, seed)
                if key in records:
                    reused += 1
                    continue
                subset = plans[seed].subset(full_train, fraction)
                counts = subset_counts(subset, full_train)
                base = {"key": key, "mode": label, "fraction": fraction, "seed": seed, **counts}
                reason = _skip_reason(fraction, n_patients, subset, prepared)
                if reason:
                    echo(f"skipped {label} at {fraction:g}, seed {seed}: {reason}")
                    record = {**base, "status": "skipped", "reason": reason, "rows": [_skipped_row(base, reason, prepared)]}
                else:
                    echo(f"{label}: fraction {fraction:g}, seed {seed}: {counts['n_train_images']} images "
                         f"of {counts['n_train_patients']} patients")  # fmt: skip
                    started = time.perf_counter()
                    if mode == "linear" and cfg.linear_via == "probe":
                        probe_inputs = probe_inputs or _embeddings(out, encoder, prepared, cfg, echo)
                        metrics, skipped, extra = _probe_cell(probe_inputs, prepared, plans[seed].rows[fraction], cfg)
                    else:
                        metrics, skipped, extra = _finetune_cell(
                            encoder, prepared, subset, mode, seed, fraction, cfg, classifier, augment_name, out, echo
                        )
                    seconds = time.perf_counter() - started
                    record = {**base, "status": "done", "seconds": seconds, **extra,
                              "rows": metric_rows(base | {"seconds": seconds}, metrics, prepared.names, skipped)}  # fmt: skip
                    echo(f"  test macro AUROC {_fmt(metrics.get('macro_auroc'))} {_fmt_ci(metrics.get('macro_auroc_ci'))} "
                         f"({seconds:.1f} s)")  # fmt: skip
                    ran += 1
                _append_cell(out / CELLS, record)
                records[key] = record
                _write_outputs(out, records, cfg, prepared, plans, plot=False)
    result = _write_outputs(out, records, cfg, prepared, plans, plot=True)
    result.cells_run, result.cells_reused = ran, reused
    return result


# ----------------------------------------------------------------------------- cells


def mode_label(mode: str, linear_via: str = "probe") -> str:
    """The curve name a mode gets in the results (``linear-probe``, ``linear-head``, ``lora``, ``full-finetune``)."""
    if mode == "linear" and linear_via == "finetune":
        return LINEAR_HEAD_LABEL
    return MODE_LABELS[mode]


def cell_key(label: str, fraction: float, seed: int) -> str:
    return f"{label}|{float(fraction):g}|{int(seed)}"


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


def _probe_cell(inputs, prepared: FinetuneData, train_rows: np.ndarray, cfg: LabelEfficiencyConfig):
    """The RETFound-Green probe fitted on one subset of the training rows; val and test whole."""
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
    return result.test.to_dict(), skipped, {"protocol": "retfound-green"}


def _finetune_cell(encoder, prepared, subset, mode, seed, fraction, cfg, classifier, augment_name, out, echo):
    """One fine-tuning run on one subset; its weights are removed afterwards unless ``keep_weights``."""
    overrides = {"progress_bar": False, **cfg.train, "seed": seed}
    train_config = build_train_config(mode, len(subset), overrides)
    run_dir = out / "runs" / f"{mode_label(mode, cfg.linear_via)}-f{fraction:g}-s{seed}"
    record = {"study": str(out), "label_fraction": fraction, "fraction_seed": seed, "mode": mode,
              "manifest_hash": prepared.manifest.hash, "contract": prepared.contract.to_dict()}  # fmt: skip
    result, skipped = finetune_and_score(
        copy.deepcopy(encoder.model), prepared, subset, classifier=classifier.model_copy(update={"mode": mode}),
        train_config=train_config, run_dir=run_dir, augment=augment_name, bootstrap=cfg.bootstrap,
        bootstrap_seed=cfg.bootstrap_seed, pos_weight=cfg.pos_weight, balanced=cfg.balanced, resume="auto",
        run_record=record, echo=lambda line: echo("  " + line) if line.startswith(("trainable", "skipped")) else None,
    )  # fmt: skip
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
        if stored.metadata.get("manifest_hash") == prepared.manifest.hash and stored.metadata.get("pool") == encoder.resolve_pool(cfg.pool):
            return align_embeddings(stored, table, source=str(path)), table
    started = time.perf_counter()
    dataset = prepared.dataset(prepared.manifest, prepared.names)
    x = embed_dataset(encoder, dataset, pool=cfg.pool, batch_size=256)
    echo(f"embedded {len(x)} images ({x.shape[1]}-d) in {time.perf_counter() - started:.1f} s")
    metadata = {"model": encoder.spec, "weights": encoder.weights_source, "pool": encoder.resolve_pool(cfg.pool),
                "contract": prepared.contract.to_dict(), "manifest_hash": prepared.manifest.hash, "model_ref": cfg.model}  # fmt: skip
    write_embeddings(path, Embeddings(dataset.ids, dataset.patient_ids, dataset.paths, x, metadata))
    return x, table


# ----------------------------------------------------------------------------- rows and outputs


def metric_rows(base: dict[str, Any], metrics: dict[str, Any], names: Sequence[str], skipped: dict[str, str]) -> list[dict]:
    """Schema rows of one cell: one per finding asked for, then ``macro``."""
    common = {k: base[k] for k in ("mode", "fraction", "seed", "n_train_images", "n_train_patients", "actual_fraction")}
    scored = {f["name"]: f for f in metrics.get("findings", [])}
    rows = []
    for name in names:
        f = scored.get(name, {})
        low, high = f.get("auroc_ci") or (None, None)
        why = skipped.get(name) or f.get("skipped")
        rows.append({**common, "finding": name, "auroc": f.get("auroc"), "ci_low": low, "ci_high": high,
                     "auprc": f.get("auprc"), "n_test_positive": f.get("n_positive"), "skipped": why})  # fmt: skip
    low, high = metrics.get("macro_auroc_ci") or (None, None)
    n_evaluable = sum(1 for r in rows if r["auroc"] is not None)
    rows.append({**common, "finding": "macro", "auroc": metrics.get("macro_auroc"), "ci_low": low, "ci_high": high,
                 "auprc": metrics.get("macro_auprc"), "n_evaluable": n_evaluable, "n_classes": len(names),
                 "skipped": None if n_evaluable else "no finding could be scored",
                 "seconds": base.get("seconds")})  # fmt: skip
    return rows


def _skipped_row(base: dict[str, Any], reason: str, prepared: FinetuneData) -> dict[str, Any]:
    row = {k: base[k] for k in ("mode", "fraction", "seed", "n_train_images", "n_train_patients", "actual_fraction")}
    return {**row, "finding": "macro", "auroc": None, "ci_low": None, "ci_high": None, "n_evaluable": 0,
            "n_classes": len(prepared.names), "skipped": reason}  # fmt: skip


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (mode, fraction): seeds, mean / std / range of macro AUROC, mean CI, mean counts."""
    from greenfm.report.label_efficiency import curve_summary, validate

    rows = validate(rows)
    summary = curve_summary(rows)
    macro = rows[(rows["finding"] == "macro") & rows["auroc"].notna()]
    extra = macro.groupby(["mode", "fraction"], as_index=False).agg(
        auroc_std=("auroc", "std"), n_train_patients=("n_train_patients", "mean")
    )
    summary = summary.merge(extra, on=["mode", "fraction"], how="left")
    order = {m: i for i, m in enumerate(dict.fromkeys(rows["mode"]))}
    return summary.sort_values(["mode", "fraction"], key=lambda c: c.map(order) if c.name == "mode" else c).reset_index(drop=True)


def _write_outputs(out: Path, records, cfg, prepared, plans, *, plot: bool) -> LabelEfficiencyResult:
    wanted = {cell_key(mode_label(m, cfg.linear_via), f, s) for m in cfg.modes for f in cfg.fractions for s in cfg.seeds}
    chosen = [r for k, r in records.items() if k in wanted]
    rows = pd.DataFrame([row for r in chosen for row in r["rows"]])
    skipped = [{k: r[k] for k in ("mode", "fraction", "seed", "reason")} for r in chosen if r["status"] == "skipped"]
    files = {"csv": out / CSV, "json": out / JSON_FILE, "summary": out / SUMMARY, "cells": out / CELLS}
    summary = summarize(rows) if not rows.empty else pd.DataFrame()
    rows.to_csv(files["csv"], index=False)
    summary.to_csv(files["summary"], index=False)
    test = prepared.splits["test"].table
    document = {
        "schema": SCHEMA,
        "rows": rows.to_dict(orient="records"),
        "summary": summary.to_dict(orient="records"),
        "config": cfg.to_dict(),
        "task": prepared.task,
        "names": prepared.names,
        "test": {"n_images": len(test), "n_patients": int(test["patient_id"].nunique())},
        "bootstrap": {"n_resamples": cfg.bootstrap, "seed": cfg.bootstrap_seed, "cluster": "patient", "level": 0.95},
        "fraction_plans": {str(s): p.counts for s, p in plans.items()},
        "skipped_cells": skipped,
        "cells": {k: {x: v for x, v in r.items() if x != "rows"} for k, r in records.items() if k in wanted},
    }
    files["json"].write_text(json.dumps(_json_safe(document), indent=1) + "\n")
    if plot and not summary.empty:
        from greenfm.report.plots import label_efficiency_plot

        macro = rows[(rows["finding"] == "macro") & rows["auroc"].notna()]
        uri = label_efficiency_plot(summary, macro)
        files["plot"] = out / PLOT
        files["plot"].write_bytes(base64.b64decode(uri.split(",", 1)[1]))
    return LabelEfficiencyResult(out, rows, summary, 0, 0, skipped, files)


# ----------------------------------------------------------------------------- study bookkeeping


def _check_study(out: Path, cfg: LabelEfficiencyConfig) -> None:
    """First run: save the options. Later runs: refuse options that would change finished cells."""
    path = out / STUDY
    if not path.is_file():
        from greenfm.engine import write_run_config

        write_run_config(out, {"label_efficiency": cfg.to_dict()}, manifest_hash=None, seed=None)
        return
    saved = read_yaml(path).get("label_efficiency", {})
    now = cfg.to_dict()
    changed = [k for k in now if k not in CONTINUABLE and saved.get(k) != now[k]]
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in changed)
        raise ConfigError(f"{out} holds a label-efficiency study with other options ({diffs}); "
                          "continue it with the same options or choose another folder")  # fmt: skip


def _read_cells(path: Path) -> dict[str, dict[str, Any]]:
    """Finished cells by key; a last line cut short by a crash is ignored."""
    records: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return records
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        records[record["key"]] = record
    return records


def _append_cell(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as handle:
        handle.write(json.dumps(_json_safe(record)) + "\n")
        handle.flush()


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
