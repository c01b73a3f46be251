"""Per-finding AUROC and AUPRC with prevalence, and their macro means.

Every task is reduced to K binary columns (``binary_columns``): a binary task is one
column, a multi-class task is one column per class (class k vs rest, scored by
probability column k, as ``roc_auc_score(multi_class="ovr", average="macro")``
does), a multi-label task is one column per finding. Labels -1 (uncertain) and NaN
(unknown) are ignored per column. A column with only one class present cannot be
scored: it is skipped and counted (``n_evaluable`` of ``n_classes``), never given
0.5. Macro means run over the evaluable columns only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from greenfm.errors import BadInputError

Task = Literal["auto", "binary", "multiclass", "multilabel"]
ONE_CLASS = "only one class present"
NO_LABELS = "no labelled images"


@dataclass
class BinaryColumns:
    """K binary targets (1 / 0 / NaN = ignored) and their scores, both (N, K)."""

    targets: np.ndarray
    scores: np.ndarray
    names: list[str]
    task: str


@dataclass
class FindingMetrics:
    """One finding (or one class vs rest); ``skipped`` says why it was not scored."""

    name: str
    n: int
    n_positive: int
    prevalence: float | None
    auroc: float | None
    auprc: float | None
    skipped: str | None = None
    auroc_ci: tuple[float, float] | None = None
    auprc_ci: tuple[float, float] | None = None
    n_degenerate_resamples: int | None = None

    @property
    def evaluable(self) -> bool:
        return self.skipped is None


@dataclass
class BootstrapInfo:
    """How confidence intervals were drawn (recorded with every result)."""

    n_resamples: int
    seed: int
    level: float
    cluster: Literal["patient", "image"]
    n_clusters: int
    method: str = "percentile"


@dataclass
class Metrics:
    """Per-finding metrics, their macro means and (optionally) bootstrap CIs."""

    task: str
    n_images: int
    findings: list[FindingMetrics]
    bootstrap: BootstrapInfo | None = None
    macro_auroc_ci: tuple[float, float] | None = None
    macro_auprc_ci: tuple[float, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def evaluable(self) -> list[FindingMetrics]:
        return [f for f in self.findings if f.evaluable]

    @property
    def n_classes(self) -> int:
        return len(self.findings)

    @property
    def n_evaluable(self) -> int:
        return len(self.evaluable)

    @property
    def macro_auroc(self) -> float | None:
        return _mean([f.auroc for f in self.evaluable])

    @property
    def macro_auprc(self) -> float | None:
        return _mean([f.auprc for f in self.evaluable])

    def __getitem__(self, name: str) -> FindingMetrics:
        for finding in self.findings:
            if finding.name == name:
                return finding
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(
            macro_auroc=self.macro_auroc,
            macro_auprc=self.macro_auprc,
            n_evaluable=self.n_evaluable,
            n_classes=self.n_classes,
        )
        return json_safe(out)

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    def summary(self) -> str:
        """A plain-text table: one line per finding, then the macro AUROC."""
        lines = [f"{'finding':<24} {'AUROC':>7} {'95% CI':>17} {'AUPRC':>7} {'prev':>6} {'n':>6}"]
        for f in self.findings:
            if not f.evaluable:
                lines.append(f"{clip(f.name, 24):<24} skipped: {f.skipped}")
                continue
            ci = f"[{f.auroc_ci[0]:.3f}, {f.auroc_ci[1]:.3f}]" if f.auroc_ci else ""
            lines.append(f"{clip(f.name, 24):<24} {f.auroc:7.3f} {ci:>17} {f.auprc:7.3f} {f.prevalence:6.3f} {f.n:6d}")
        macro = "n/a" if self.macro_auroc is None else f"{self.macro_auroc:.3f}"
        ci = f" [{self.macro_auroc_ci[0]:.3f}, {self.macro_auroc_ci[1]:.3f}]" if self.macro_auroc_ci else ""
        boot = ""
        if self.bootstrap is not None:
            b = self.bootstrap
            boot = f"; {b.level:.0%} CIs: {b.n_resamples} {b.cluster}-level resamples, seed {b.seed}"
        lines.append(f"macro AUROC {macro}{ci} over {self.n_evaluable}/{self.n_classes} evaluable{boot}")
        return "\n".join(lines)

    def to_frame(self) -> pd.DataFrame:
        """One row per finding, CIs split into ``*_low`` / ``*_high`` columns."""
        rows = []
        for f in self.findings:
            row = {k: v for k, v in asdict(f).items() if not k.endswith("_ci")}
            for key in ("auroc", "auprc"):
                ci = getattr(f, f"{key}_ci")
                row[f"{key}_low"], row[f"{key}_high"] = ci if ci is not None else (None, None)
            rows.append(row)
        return pd.DataFrame(rows)


def binary_columns(
    y_true: Any,
    y_score: Any,
    *,
    task: Task = "auto",
    names: Sequence[str] | None = None,
) -> BinaryColumns:
    """Reduce a binary, multi-class or multi-label task to K binary columns.

    ``auto``: a 1-D ``y_score`` (or an (N, 2) one with 1-D labels) is binary; an
    (N, K) ``y_score`` with 1-D integer labels is multi-class; labels of the same
    (N, K) shape as ``y_score`` are multi-label.
    """
    y = np.asarray(y_true, dtype=float)
    s = np.asarray(y_score, dtype=float)
    if y.shape[0] != s.shape[0]:
        raise BadInputError(f"{y.shape[0]} labels but {s.shape[0]} scores")
    if task == "auto":
        if s.ndim == 1 or (y.ndim == 1 and s.shape[1] == 2):
            task = "binary"
        elif y.ndim == 1:
            task = "multiclass"
        else:
            task = "multilabel"

    if task == "binary":
        if s.ndim == 2:
            if s.shape[1] != 2:
                raise BadInputError(f"binary scores must be (N,) or (N, 2), got {s.shape}")
            s = s[:, 1]
        targets, scores = _clean(y.reshape(-1, 1)), s.reshape(-1, 1)
        names = list(names) if names is not None else ["positive"]
    elif task == "multiclass":
        if s.ndim != 2 or y.ndim != 1:
            raise BadInputError(f"multi-class needs (N,) labels and (N, K) scores, got {y.shape}, {s.shape}")
        k = s.shape[1]
        labelled = np.isfinite(y) & (y >= 0)
        outside = labelled & ((y != np.round(y)) | (y >= k))
        if outside.any():
            raise BadInputError(f"multi-class labels must be integers 0..{k - 1}; found {np.unique(y[outside])[:5]}")
        targets = (y[:, None] == np.arange(k)[None, :]).astype(float)
        targets[~labelled] = np.nan
        scores = s
        names = list(names) if names is not None else [str(c) for c in range(k)]
    elif task == "multilabel":
        if y.shape != s.shape or y.ndim != 2:
            raise BadInputError(f"multi-label needs labels and scores of one (N, K) shape, got {y.shape}, {s.shape}")
        targets, scores = _clean(y), s
        names = list(names) if names is not None else [str(c) for c in range(s.shape[1])]
    else:
        raise BadInputError(f"unknown task {task!r}; choose auto, binary, multiclass or multilabel")

    if len(names) != scores.shape[1]:
        raise BadInputError(f"{len(names)} names for {scores.shape[1]} columns")
    bad = np.isfinite(targets) & ~np.isfinite(scores)
    if bad.any():
        raise BadInputError(f"{int(bad.sum())} labelled score(s) are NaN or infinite")
    return BinaryColumns(targets=targets, scores=scores, names=names, task=task)


def score_columns(columns: BinaryColumns) -> Metrics:
    """AUROC, AUPRC and prevalence per column; one-class columns skipped and counted."""
    findings = []
    for k, name in enumerate(columns.names):
        y, s = columns.targets[:, k], columns.scores[:, k]
        keep = np.isfinite(y)
        y, s = y[keep], s[keep]
        n, n_pos = len(y), int(y.sum())
        prevalence = n_pos / n if n else None
        if n == 0 or n_pos in (0, n):
            findings.append(FindingMetrics(name, n, n_pos, prevalence, None, None, NO_LABELS if n == 0 else ONE_CLASS))
            continue
        auroc = float(roc_auc_score(y, s))
        auprc = float(average_precision_score(y, s))
        findings.append(FindingMetrics(name, n, n_pos, prevalence, auroc, auprc))
    return Metrics(task=columns.task, n_images=int(columns.targets.shape[0]), findings=findings)


def compute_metrics(y_true: Any, y_score: Any, *, task: Task = "auto", names: Sequence[str] | None = None) -> Metrics:
    """Per-finding and macro AUROC / AUPRC for any task (see ``binary_columns``)."""
    return score_columns(binary_columns(y_true, y_score, task=task, names=names))


def binary_metrics(y_true: Any, y_score: Any, *, name: str = "positive") -> Metrics:
    """One binary finding; ``y_score`` is (N,) or an (N, 2) probability matrix."""
    return compute_metrics(y_true, y_score, task="binary", names=[name])


def multiclass_metrics(y_true: Any, proba: Any, *, classes: Sequence[str] | None = None) -> Metrics:
    """Class k vs rest from probability column k; macro = sklearn's OvR macro AUROC."""
    return compute_metrics(y_true, proba, task="multiclass", names=classes)


def multilabel_metrics(y_true: Any, y_score: Any, *, findings: Sequence[str] | None = None) -> Metrics:
    """One column per finding; -1 / NaN labels ignored per finding."""
    return compute_metrics(y_true, y_score, task="multilabel", names=findings)


def _clean(y: np.ndarray) -> np.ndarray:
    """1 / 0 kept; -1 (uncertain) and NaN (unknown) become NaN; anything else is an error."""
    out = np.where(y == -1, np.nan, y)
    odd = np.isfinite(out) & (out != 0) & (out != 1)
    if odd.any():
        raise BadInputError(f"binary labels must be 1, 0, -1 or empty; found {np.unique(out[odd])[:5]}")
    return out


def _mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def json_safe(value: Any) -> Any:
    """NaN / inf become None and numpy scalars plain Python, so ``json.dumps`` is strict-JSON."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def clip(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, its last one an ellipsis when something was cut."""
    text = str(text)
    return text if len(text) <= width else text[: width - 1] + "\u2026"
