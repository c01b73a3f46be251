"""The files of a label-efficiency study: the cell log, schema rows, the summary and the plot.

Each finished (or skipped) cell is one JSON line of ``cells.jsonl``, appended as soon
as it is known, so no interrupted study loses finished work; every other file is
rewritten from that log. Rows follow ``greenfm.report.label_efficiency`` (schema
``greenfm.label-efficiency/1``): one per (mode, fraction, seed, finding), plus
``macro``, with the actual training image and patient counts.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from greenfm.config import read_yaml
from greenfm.errors import ConfigError
from greenfm.evaluate.metrics import json_safe

if TYPE_CHECKING:
    from greenfm.workflows.finetune_data import FinetuneData
    from greenfm.workflows.adapt_config import LabelEfficiencyConfig

SCHEMA = "greenfm.label-efficiency/1"  # greenfm.report.label_efficiency.SCHEMA
MODE_LABELS = {"linear": "linear-probe", "lora": "lora", "full": "full-finetune"}
LINEAR_HEAD_LABEL = "linear-head"  # linear fine-tuned through the engine (linear_via="finetune")
CELLS, STUDY, PLANS = "cells.jsonl", "config.yaml", "fraction_plans.json"
CSV, JSON_FILE, PLOT = "label_efficiency.csv", "label_efficiency.json", "label_efficiency.png"
SUMMARY = "label_efficiency_summary.csv"
# Options that may differ when a study is continued: they do not change any cell's result.
CONTINUABLE = frozenset({"fractions", "seeds", "modes", "keep_weights", "cache", "skip_bad"})
COUNT_COLUMNS = ("mode", "fraction", "seed", "n_train_images", "n_train_patients", "actual_fraction")


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
        lines = [f"{'mode':<15} {'fraction':>8} {'patients':>8} {'images':>7} {'seeds':>5} {'macro AUROC':>11} "
                 f"{'95% CI':>15} {'seed sd':>7}"]
        for _, r in self.summary.iterrows():
            ci = f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if np.isfinite(r["ci_low"]) else ""
            sd = f"{r['auroc_std']:.3f}" if np.isfinite(r["auroc_std"]) else ""
            same = r.get("same_subset_as")
            flag = f"  same subset as {same:g}" if same is not None and np.isfinite(same) else ""
            lines.append(f"{r['mode']:<15} {r['fraction']:>8g} {r['n_train_patients']:>8.0f} {r['n_train_images']:>7.0f} "
                         f"{int(r['n_seeds']):>5} {r['auroc_mean']:>11.3f} {ci:>15} {sd:>7}{flag}")  # fmt: skip
        if self.skipped_cells:
            why = (f"{c['mode']} {c['fraction']:g} seed {c['seed']}: {c['reason']}" for c in self.skipped_cells)
            lines.append(f"{len(self.skipped_cells)} cell(s) skipped: " + "; ".join(why))
        return "\n".join(lines)


def mode_label(mode: str, linear_via: str = "probe") -> str:
    """The curve name a mode gets in the results (``linear-probe``, ``linear-head``, ``lora``, ``full-finetune``)."""
    if mode == "linear" and linear_via == "finetune":
        return LINEAR_HEAD_LABEL
    return MODE_LABELS[mode]


def cell_key(label: str, fraction: float, seed: int) -> str:
    return f"{label}|{float(fraction):g}|{int(seed)}"


# ----------------------------------------------------------------------------- rows and outputs


def metric_rows(
    base: dict[str, Any], metrics: dict[str, Any], names: Sequence[str], skipped: dict[str, str]
) -> list[dict[str, Any]]:
    """Schema rows of one cell: one per finding asked for, then ``macro``."""
    common = {k: base[k] for k in COUNT_COLUMNS}
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


def skipped_row(base: dict[str, Any], reason: str, prepared: FinetuneData) -> dict[str, Any]:
    row = {k: base[k] for k in COUNT_COLUMNS}
    return {**row, "finding": "macro", "auroc": None, "ci_low": None, "ci_high": None, "n_evaluable": 0,
            "n_classes": len(prepared.names), "skipped": reason}  # fmt: skip


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (mode, fraction): seeds, mean / std / range of macro AUROC, mean CI, mean counts."""
    from greenfm.report.label_efficiency import curve_summary, validate

    rows = validate(rows)
    summary = curve_summary(rows)
    macro = rows[(rows["finding"] == "macro") & rows["auroc"].notna()]
    extra = macro.groupby(["mode", "fraction"], as_index=False).agg(auroc_std=("auroc", "std"))
    summary = summary.merge(extra, on=["mode", "fraction"], how="left")
    order = {m: i for i, m in enumerate(dict.fromkeys(rows["mode"]))}
    summary = summary.sort_values(["mode", "fraction"], key=lambda c: c.map(order) if c.name == "mode" else c)
    return summary.reset_index(drop=True)


def write_outputs(
    out: Path, records: dict[str, dict], cfg: LabelEfficiencyConfig, prepared: FinetuneData, plans: dict, *, plot: bool
) -> LabelEfficiencyResult:
    """Rewrite CSV, JSON and summary (and the plot) from the cells of ``cfg``'s grid found in ``records``."""
    labels = [mode_label(m, cfg.linear_via) for m in cfg.modes]
    wanted = {cell_key(label, f, s) for label in labels for f in cfg.fractions for s in cfg.seeds}
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
    files["json"].write_text(json.dumps(json_safe(document), indent=1) + "\n")
    if plot and not summary.empty:
        from greenfm.report.plots import label_efficiency_plot

        macro = rows[(rows["finding"] == "macro") & rows["auroc"].notna()]
        uri = label_efficiency_plot(summary, macro)
        files["plot"] = out / PLOT
        files["plot"].write_bytes(base64.b64decode(uri.split(",", 1)[1]))
    return LabelEfficiencyResult(out, rows, summary, 0, 0, skipped, files)


# ----------------------------------------------------------------------------- study bookkeeping


def check_study(out: Path, cfg: LabelEfficiencyConfig) -> None:
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


def read_cells(path: Path) -> dict[str, dict[str, Any]]:
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


def append_cell(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as handle:
        handle.write(json.dumps(json_safe(record)) + "\n")
        handle.flush()
