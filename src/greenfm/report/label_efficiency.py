"""The label-efficiency results file the report reads, and its per-curve summary.

Schema ``greenfm.label-efficiency/1``, written by ``greenfm evaluate label-efficiency``
as ``label_efficiency.csv`` (also read: ``label_efficiency.parquet``, and
``label_efficiency.json`` holding either a list of row objects or
``{"schema": "greenfm.label-efficiency/1", "rows": [...], ...}``).

One row per (mode, fraction, seed, finding):

=================  ========  ==================================================================
column             type      meaning
=================  ========  ==================================================================
mode               str       the adaptation compared, one curve each (``linear-probe``, ``lora``,
                             ``full-finetune``, or any label)
fraction           float     share of the training *patients* whose labels were used, in (0, 1]
seed               int       seed of the nested fraction draw and of training
finding            str       a finding name, or ``macro`` for the mean over evaluable findings
auroc              float     test AUROC; empty when the finding could not be scored
ci_low, ci_high    float     95% patient-bootstrap percentile interval of ``auroc``; empty if none
-----------------  --------  ------------------------------------------------------------------
optional:
auprc              float     test average precision
n_train_images     int       labelled training images actually used
n_train_patients   int       labelled training patients actually used
n_evaluable        int       (``macro`` rows) findings scored ...
n_classes          int       ... of findings asked for
skipped            str       why ``auroc`` is empty (e.g. "only one class present")
=================  ========  ==================================================================

Required columns: mode, fraction, seed, finding, auroc, ci_low, ci_high. When a file
has no ``macro`` rows, the report averages the scored findings per (mode, fraction,
seed) and shows no interval for that mean.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from greenfm.errors import BadInputError

SCHEMA = "greenfm.label-efficiency/1"
FILE_NAMES = ("label_efficiency.csv", "label_efficiency.parquet", "label_efficiency.json")
REQUIRED = ("mode", "fraction", "seed", "finding", "auroc", "ci_low", "ci_high")
MACRO = "macro"


def read_label_efficiency(path: str | Path) -> pd.DataFrame:
    """Read and type-check a label-efficiency results file (see the module docstring)."""
    path = Path(path)
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        rows = data.get("rows") if isinstance(data, dict) else data
        if not isinstance(rows, list):
            raise BadInputError("expected a list of rows or an object with 'rows'", source=str(path))
        table = pd.DataFrame(rows)
    elif path.suffix == ".parquet":
        table = pd.read_parquet(path)
    else:
        table = pd.read_csv(path)
    return validate(table, source=str(path))


def validate(table: pd.DataFrame, *, source: str | None = None) -> pd.DataFrame:
    """Columns present and typed; fractions in (0, 1]; an interval never without its AUROC."""
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise BadInputError(f"label-efficiency results lack column(s) {missing}; need {list(REQUIRED)}", source=source)
    table = table.copy()
    table["mode"] = table["mode"].astype(str)
    table["finding"] = table["finding"].astype(str)
    for column in ("fraction", "auroc", "ci_low", "ci_high"):
        table[column] = pd.to_numeric(table[column], errors="coerce")
    table["seed"] = pd.to_numeric(table["seed"], errors="coerce")
    bad = ~table["fraction"].between(0, 1, inclusive="right")
    if bad.any():
        raise BadInputError(
            f"fraction must lie in (0, 1]; row {int(np.flatnonzero(bad)[0])} has {table['fraction'][bad].iloc[0]}",
            source=source,
        )
    if table["seed"].isna().any():
        raise BadInputError("every row needs an integer seed", source=source)
    return table


def curve_summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (mode, fraction): macro AUROC over seeds and its bootstrap interval.

    Columns: ``mode, fraction, n_seeds, auroc_mean, auroc_min, auroc_max, ci_low, ci_high,
    n_train_images`` (means over seeds; ``ci_*`` NaN where the file gave none).
    """
    macro = table[table["finding"] == MACRO]
    if macro.empty:  # no macro rows: mean of the scored findings, without an interval
        scored = table[table["auroc"].notna()]
        macro = scored.groupby(["mode", "fraction", "seed"], as_index=False).agg(auroc=("auroc", "mean"))
        macro["ci_low"], macro["ci_high"] = np.nan, np.nan
    macro = macro[macro["auroc"].notna()]
    aggregations = {
        "n_seeds": ("seed", "nunique"),
        "auroc_mean": ("auroc", "mean"),
        "auroc_min": ("auroc", "min"),
        "auroc_max": ("auroc", "max"),
        "ci_low": ("ci_low", "mean"),
        "ci_high": ("ci_high", "mean"),
    }
    for count in ("n_train_images", "n_train_patients"):
        if count in macro.columns:
            aggregations[count] = (count, "mean")
    out = macro.groupby(["mode", "fraction"], as_index=False).agg(**aggregations)
    out = out.sort_values(["mode", "fraction"]).reset_index(drop=True)
    return flag_same_subsets(out)


def flag_same_subsets(summary: pd.DataFrame) -> pd.DataFrame:
    """``same_subset_as``: the smaller fraction of the same mode whose (nested) subsets hold as many patients
    (and images) on every seed's mean, i.e. the same training data under two names; NaN otherwise."""
    summary = summary.copy()
    summary["same_subset_as"] = np.nan
    keys = [c for c in ("n_train_patients", "n_train_images") if c in summary.columns]
    if not keys:
        return summary
    for _, curve in summary.groupby("mode", sort=False):
        curve = curve.sort_values("fraction")
        previous = None
        for index, r in curve.iterrows():
            if previous is not None and all(np.isclose(r[k], previous[k]) for k in keys):
                summary.loc[index, "same_subset_as"] = previous["fraction"]
            previous = r
    return summary


def fraction_label(r: pd.Series | dict) -> str:
    """``10% (28 patients, 71 images)``, with ``= 1% subset`` when a smaller fraction gave the same data."""
    text = f"{float(r['fraction']) * 100:g}%"
    counts = [f"{float(r[k]):.0f} {word}" for k, word in (("n_train_patients", "patients"), ("n_train_images", "images"))
              if k in r and r[k] is not None and np.isfinite(float(r[k]))]  # fmt: skip
    if counts:
        text += f" ({', '.join(counts)})"
    same = r.get("same_subset_as") if hasattr(r, "get") else None
    if same is not None and np.isfinite(float(same)):
        text += f" = the {float(same) * 100:g}% subset"
    return text
