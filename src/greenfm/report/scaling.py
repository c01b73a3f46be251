"""The data-scaling section of the report: what ``greenfm scaling`` wrote to ``scaling.json``.

One figure per evaluation with two panels: the metric against training images (log axis,
patient-bootstrap 95% CIs as error bars, the fitted ``a - b * n^(-c)`` dashed, each
recipe's init as a dotted line: the n = 0 reference) and the same points against each
cell's training FLOPs from its ledger (the compute-matched view; with equal steps and
batch, one recipe's cells cost the same FLOPs at every n). Tables: the fits, the paired
differences between recipes, and the expected orderings as the paired CIs read them.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from greenfm.report.fragments import figure, is_number, missing, row, table
from greenfm.report.plots import INK, MUTED, PALETTE, _figure, _style, to_data_uri
from greenfm.report.runs import RunArtifacts

FILE = "scaling.json"


def read_scaling(root: Path) -> dict[str, Any] | None:
    """A study's ``scaling.json`` (top level or one folder down), or None."""
    for path in (root / FILE, *sorted(root.glob(f"*/{FILE}"))):
        if path.is_file():
            data = json.loads(path.read_text())
            if isinstance(data, dict) and str(data.get("schema", "")).startswith("greenfm.scaling/"):
                return data
    return None


def scaling_body(runs: list[RunArtifacts]) -> str | None:
    """The section's HTML for every run holding a scaling study; None when none does."""
    parts = []
    for run in runs:
        try:
            study = read_scaling(run.root)
        except (OSError, ValueError) as err:
            parts.append(f'<p class="problem">{escape(run.name)}: {FILE} cannot be read ({escape(str(err))})</p>')
            continue
        if study is not None:
            parts.append(f"<h3>{escape(run.name)}</h3>" + study_html(study))
    return "".join(parts) if parts else None


def study_html(study: dict[str, Any]) -> str:
    points = pd.DataFrame(study.get("points", []))
    if points.empty:
        return missing("The study has no finished evaluation yet.")
    subsets = ", ".join(f"{s['images']:,} images / {s['patients']:,} patients" for s in study.get("subsets", []))
    notes = "".join(f"<li>{escape(n)}</li>" for n in study.get("notes", []))
    head = (f"<p>{study.get('steps')} optimiser steps per cell; subsets (nested, patient-closed): {escape(subsets)}."
            " CIs: 95% patient bootstrap.</p>" + (f"<ul>{notes}</ul>" if notes else ""))  # fmt: skip
    fits = {(f["recipe"], f["evaluation"]): f for f in study.get("fits", [])}
    recipes = study.get("recipes") or sorted(points["recipe"].unique())
    figures = []
    for evaluation, group in points.groupby("evaluation", sort=False):
        figures.append(figure(scaling_plot(group, fits, recipes, evaluation), f"{evaluation} against training size",
                              f"{escape(evaluation)}: test macro AUROC against training images (left) and training "
                              "FLOPs (right); dotted: the init (n = 0); dashed: the fitted power law."))  # fmt: skip
    return head + "".join(figures) + _fit_table(study.get("fits", [])) + _pairs_table(study.get("pairs", [])) + \
        _orderings_table(study.get("orderings", []))


def scaling_plot(points: pd.DataFrame, fits: dict, recipes: list[str], evaluation: str) -> str:
    """Two panels for one evaluation (see the module docstring); a data URI."""
    fig = _figure(10.0, 3.4)
    by_n, by_flops = fig.subplots(1, 2)
    for i, recipe in enumerate(recipes):
        rows = points[points["recipe"] == recipe]
        if rows.empty:
            continue
        colour = PALETTE[i % len(PALETTE)]
        sized = rows[rows["images"] > 0].sort_values("images")
        init = rows[rows["images"] == 0]
        for ax, x, line in ((by_n, sized["images"], "-"), (by_flops, sized["training_flops"], "none")):
            x = pd.to_numeric(x, errors="coerce").to_numpy(dtype=float)
            y = sized["value"].to_numpy(dtype=float)
            low = y - sized["ci_low"].to_numpy(dtype=float)
            high = sized["ci_high"].to_numpy(dtype=float) - y
            ok = np.isfinite(x) & np.isfinite(y) & (x > 0)
            if ok.any():
                err = np.vstack([np.nan_to_num(low[ok]), np.nan_to_num(high[ok])])
                ax.errorbar(x[ok], y[ok], yerr=err, color=colour, marker="o", markersize=4, capsize=2,
                            linewidth=1.4, linestyle=line, label=recipe)  # fmt: skip
            if not init.empty and is_number(init["value"].iloc[0]):
                ax.axhline(float(init["value"].iloc[0]), color=colour, linestyle=":", linewidth=1,
                           label=f"{recipe} init (n = 0)")  # fmt: skip
        fit = fits.get((recipe, evaluation))
        if fit and fit.get("fitted") and len(sized) > 1:
            grid = np.geomspace(sized["images"].min(), sized["images"].max(), 64)
            curve = fit["a"] - fit["b"] * grid ** (-fit["c"])
            by_n.plot(grid, curve, color=colour, linestyle="--", linewidth=1,
                      alpha=1.0 if fit.get("identifiable") else 0.4)  # fmt: skip
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    sizes = sorted(int(n) for n in points["images"].unique() if n > 0)
    by_n.set_xscale("log")
    if sizes:  # one labelled tick per size, no minor labels crowding them
        by_n.xaxis.set_major_locator(FixedLocator(sizes))
        by_n.set_xticklabels([f"{n:,}" for n in sizes], rotation=30)
        by_n.xaxis.set_minor_locator(NullLocator())
    by_n.set_xlabel("training images (n)", color=INK, fontsize=8)
    by_n.set_ylabel("test macro AUROC", color=INK, fontsize=8)
    flops = pd.to_numeric(points["training_flops"], errors="coerce")
    flops = flops[flops > 0]
    if len(flops) and flops.max() / flops.min() >= 10:  # several decades: log; else a plain axis reads better
        by_flops.set_xscale("log")
        by_flops.xaxis.set_minor_formatter(NullFormatter())
    else:
        by_flops.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
    by_flops.set_xlabel("training FLOPs per cell", color=INK, fontsize=8)
    for ax in (by_n, by_flops):
        _style(ax)
    handles, labels = by_n.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, fontsize=7, frameon=False, loc="outside right center")
    by_n.set_title(evaluation, color=MUTED, fontsize=8)
    return to_data_uri(fig)


def _fit_table(fits: list[dict[str, Any]]) -> str:
    if not fits:
        return ""
    rows = []
    for f in fits:
        def value(key):
            v, ci = f.get(key), f.get(f"{key}_ci")
            if not is_number(v):
                return "&ndash;"
            return f"{v:.4g}" + (f' <span class="ci">({ci[0]:.3g}&ndash;{ci[1]:.3g})</span>' if ci else "")

        status = "fitted" if f.get("fitted") and f.get("identifiable") else escape(f"{f.get('reason')}")
        rows.append(row([escape(f["evaluation"]), escape(f["recipe"]), value("a"), value("b"), value("c"), status],
                        {2, 3, 4}))  # fmt: skip
    return "<h4>Power-law fits, metric(n) = a &minus; b&middot;n<sup>&minus;c</sup></h4>" + table(
        ["Evaluation", "Recipe", "a", "b", "c", "Status"], rows, {2, 3, 4})


def _pairs_table(pairs: list[dict[str, Any]]) -> str:
    chosen = [p for p in pairs if p.get("kind") == "recipes"]
    if not chosen:
        return ""
    rows = [row([escape(p["evaluation"]), escape(p["comparison"]), f"{p['images']:,}", _diff(p), escape(p["verdict"])],
                {2, 3}) for p in chosen]  # fmt: skip
    return "<h4>Paired differences between recipes (same test patients)</h4>" + table(
        ["Evaluation", "Difference", "n", "B &minus; A (95% CI)", "Verdict"], rows, {2, 3})


def _orderings_table(orderings: list[dict[str, Any]]) -> str:
    if not orderings:
        return ""
    rows = [row([escape(o["ordering"]), escape(o["evaluation"]), str(o["comparisons"]), str(o["higher"]),
                 str(o["no_clear_difference"]), str(o["lower"]), escape(o["holds"])], {2, 3, 4, 5})
            for o in orderings]  # fmt: skip
    return "<h4>Expected orderings (METHODS 5.3), read from paired CIs</h4>" + table(
        ["Ordering", "Evaluation", "Comparisons", "Higher", "No clear difference", "Lower", "Reading"], rows,
        {2, 3, 4, 5})


def _diff(p: dict[str, Any]) -> str:
    if not is_number(p.get("difference")):
        return "&ndash;"
    ci = f' <span class="ci">({p["ci_low"]:+.3f}&ndash;{p["ci_high"]:+.3f})</span>' if is_number(p.get("ci_low")) else ""
    return f"{p['difference']:+.3f}{ci}"
