"""The report's figures: matplotlib (Agg canvas, no pyplot state) to base64 PNG data URIs.

Figures are built on ``matplotlib.figure.Figure`` with an explicit Agg canvas, so
no global backend is switched and nothing opens a window. Colours are the
Okabe-Ito palette, which stays distinguishable for colour-blind readers.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
INK, GRID, MUTED = "#1f2933", "#e4e7eb", "#7b8794"


@dataclass
class RocCurve:
    """One run's ROC curve for one finding."""

    label: str
    fpr: np.ndarray
    tpr: np.ndarray
    auroc: float
    n: int
    n_positive: int


def roc_curve_of(label: str, y: np.ndarray, score: np.ndarray) -> RocCurve | str:
    """The ROC curve of binary ``y`` (1/0; -1 and NaN ignored), or why there is none."""
    from sklearn.metrics import roc_auc_score, roc_curve

    y, score = np.asarray(y, dtype=float), np.asarray(score, dtype=float)
    keep = np.isfinite(y) & (y >= 0) & np.isfinite(score)
    y, score = y[keep], score[keep]
    n_pos = int((y == 1).sum())
    if len(y) == 0:
        return "no labelled test images"
    if n_pos in (0, len(y)):
        return f"only one class present ({n_pos} positive of {len(y)})"
    fpr, tpr, _ = roc_curve(y, score)
    return RocCurve(label, fpr, tpr, float(roc_auc_score(y, score)), len(y), n_pos)


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _style(ax) -> None:
    ax.grid(True, color=GRID, linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color("#9aa5b1")
    ax.tick_params(colors=INK, labelsize=8)


def to_data_uri(fig) -> str:
    """PNG bytes of ``fig`` as a ``data:image/png;base64,...`` URI (no timestamp metadata)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", facecolor="white", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def roc_grid(curves: dict[str, list[RocCurve]], skipped: dict[str, str], *, columns: int = 4) -> str:
    """Small multiples: one panel per finding, one line per run, chance diagonal; a data URI."""
    findings = list(dict.fromkeys([*curves, *skipped]))
    columns = max(1, min(columns, len(findings)))
    rows = math.ceil(len(findings) / columns)
    fig = _figure(3.0 * columns, 3.0 * rows + 0.2)
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    labels = list(dict.fromkeys(c.label for found in curves.values() for c in found))
    colours = {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(labels)}
    for ax, finding in zip(axes, findings):
        _style(ax)
        ax.plot([0, 1], [0, 1], color=MUTED, linestyle=(0, (3, 3)), linewidth=0.9)
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.set_aspect("equal")
        ax.set_title(finding, fontsize=9.5, color=INK, loc="left", fontweight="bold")
        ax.set_xlabel("1 - specificity", fontsize=8, color=INK)
        ax.set_ylabel("sensitivity", fontsize=8, color=INK)
        if finding in curves:
            for curve in curves[finding]:
                name = f"{curve.label}: {curve.auroc:.3f}" if len(labels) > 1 else f"AUROC {curve.auroc:.3f}"
                ax.plot(curve.fpr, curve.tpr, color=colours[curve.label], linewidth=1.7, label=name)
            ax.legend(loc="lower right", fontsize=7, frameon=True, framealpha=0.9, edgecolor=GRID)
        else:
            ax.text(
                0.5,
                0.5,
                "not scored:\n" + skipped[finding],
                ha="center",
                va="center",
                fontsize=7.5,
                color=MUTED,
                wrap=True,
                transform=ax.transAxes,
            )
    for ax in axes[len(findings) :]:
        ax.set_visible(False)
    return to_data_uri(fig)


def label_efficiency_plot(summary: pd.DataFrame, per_seed: pd.DataFrame | None = None) -> str:
    """Macro AUROC against label fraction (log axis), a line per mode, 95% CI band, seeds as dots."""
    fig = _figure(7.2, 4.0)
    ax = fig.subplots()
    _style(ax)
    for i, (mode, curve) in enumerate(summary.groupby("mode", sort=False)):
        colour = PALETTE[i % len(PALETTE)]
        curve = curve.sort_values("fraction")
        x = curve["fraction"].to_numpy(dtype=float)
        ax.plot(x, curve["auroc_mean"], color=colour, linewidth=2.0, marker="o", markersize=4.5, label=mode)
        low, high = curve["ci_low"].to_numpy(dtype=float), curve["ci_high"].to_numpy(dtype=float)
        band = np.isfinite(low) & np.isfinite(high)
        if band.any():
            ax.fill_between(x[band], low[band], high[band], color=colour, alpha=0.16, linewidth=0)
        if per_seed is not None:
            seeds = per_seed[per_seed["mode"] == mode]
            ax.scatter(seeds["fraction"], seeds["auroc"], color=colour, s=11, alpha=0.55, linewidths=0, zorder=3)
    ax.set_xscale("log")
    fractions = sorted(summary["fraction"].unique())
    ax.set_xticks(fractions)
    patients = (summary.groupby("fraction")["n_train_patients"].mean() if "n_train_patients" in summary.columns
                else pd.Series(dtype=float))  # fmt: skip
    ax.set_xticklabels([f"{f * 100:g}%" + (f"\n{patients[f]:.0f} pts" if f in patients.index and np.isfinite(patients[f])
                                           else "") for f in fractions])  # fmt: skip
    ax.minorticks_off()
    ax.set_xlabel("share of training patients with labels", fontsize=9, color=INK)
    ax.set_ylabel("macro AUROC (test)", fontsize=9, color=INK)
    ax.legend(fontsize=8.5, frameon=False, loc="lower right")
    return to_data_uri(fig)


def difference_plot(rows: list[dict], name_a: str, name_b: str) -> str:
    """Forest plot: one line per (mode, label fraction), the mean difference B - A and its 95% CI."""
    rows = [r for r in rows if isinstance(r.get("difference"), (int, float))]
    fig = _figure(7.2, 0.9 + 0.32 * max(len(rows), 1))
    ax = fig.subplots()
    _style(ax)
    modes = list(dict.fromkeys(str(r.get("mode")) for r in rows))
    labels = []
    for y, r in enumerate(rows):
        colour = PALETTE[modes.index(str(r.get("mode"))) % len(PALETTE)]
        ci = r.get("difference_ci")
        if ci:
            ax.plot(ci, [y, y], color=colour, linewidth=2.2, solid_capstyle="round")
        ax.plot([r["difference"]], [y], "o", color=colour, markersize=5)
        labels.append(f"{r.get('mode')}, {100 * float(r.get('fraction', 0)):g}%")
    ax.axvline(0.0, color=MUTED, linewidth=1.0, linestyle="--")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(labels)
    ax.invert_yaxis()
    ax.set_xlabel(f"macro AUROC difference, {name_b} \u2212 {name_a}", fontsize=9, color=INK)
    return to_data_uri(fig)


def training_curve(series: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
    """Training loss against optimiser step, a line per run (log y when all positive)."""
    fig = _figure(7.2, 2.8)
    ax = fig.subplots()
    _style(ax)
    values = []
    for i, (label, (steps, loss)) in enumerate(series.items()):
        marker = "o" if len(steps) < 30 else None  # a short curve (or one point) stays visible
        ax.plot(steps, loss, color=PALETTE[i % len(PALETTE)], linewidth=1.5, marker=marker, markersize=3.5, label=label)
        values.extend(np.asarray(loss, dtype=float).tolist())
    if values and min(values) > 0 and max(values) / min(values) > 30:  # log only when it spans decades
        ax.set_yscale("log")
    ax.set_xlabel("optimiser step", fontsize=9, color=INK)
    ax.set_ylabel("training loss", fontsize=9, color=INK)
    if len(series) > 1:
        ax.legend(fontsize=8, frameon=False)
    return to_data_uri(fig)
