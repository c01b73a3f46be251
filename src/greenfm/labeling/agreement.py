"""Agreement between a labeler and reference labels, per finding.

Counting rules (one finding at a time):

- a reference NaN (unknown) row is not compared;
- a reference -1 (uncertain) row is not compared by default
  (``reference_uncertain="exclude"``), or counts as ``"positive"`` / ``"negative"``;
- a predicted 1 is positive; predicted 0 and NaN (not mentioned) are negative;
  a predicted -1 is negative by default (``predicted_uncertain="negative"``),
  or ``"positive"``.

precision = tp / (tp + fp), recall = tp / (tp + fn), F1 their harmonic mean,
NaN when undefined (no predicted or no reference positive); ``support`` is the
number of reference positives, ``n`` the rows compared. ``exact`` is the share
of compared rows whose predicted code equals the reference code (a blank
prediction never equals a 0).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from greenfm.errors import BadInputError, ConfigError

_SIDES = ("exclude", "positive", "negative")


def compare_labels(
    predicted: pd.DataFrame,
    reference: pd.DataFrame,
    findings: list[str] | None = None,
    *,
    reference_uncertain: str = "exclude",
    predicted_uncertain: str = "negative",
) -> pd.DataFrame:
    """One row per finding: n, support, tp, fp, fn, tn, precision, recall, f1, exact."""
    if reference_uncertain not in _SIDES or predicted_uncertain not in _SIDES[1:]:
        raise ConfigError("reference_uncertain: exclude|positive|negative; predicted_uncertain: positive|negative")
    if len(predicted) != len(reference):
        raise BadInputError(f"{len(predicted)} predicted rows but {len(reference)} reference rows")
    findings = findings or [c for c in predicted.columns if c in reference.columns]
    rows = []
    for f in findings:
        pred = pd.to_numeric(predicted[f], errors="coerce").to_numpy(dtype=np.float64)
        ref = pd.to_numeric(reference[f], errors="coerce").to_numpy(dtype=np.float64)
        use = ~np.isnan(ref)
        if reference_uncertain == "exclude":
            use &= ref != -1
        ref_pos = (ref == 1) | ((ref == -1) & (reference_uncertain == "positive"))
        pred_pos = (pred == 1) | ((pred == -1) & (predicted_uncertain == "positive"))
        r, p = ref_pos[use], pred_pos[use]
        tp, fp = int((r & p).sum()), int((~r & p).sum())
        fn, tn = int((r & ~p).sum()), int((~r & ~p).sum())
        precision = tp / (tp + fp) if tp + fp else np.nan
        recall = tp / (tp + fn) if tp + fn else np.nan
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else np.nan
        exact = float(np.mean(np.where(np.isnan(pred[use]), False, pred[use] == ref[use]))) if use.any() else np.nan
        rows.append(
            {"finding": f, "n": int(use.sum()), "support": tp + fn, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
             "precision": precision, "recall": recall, "f1": f1, "exact": exact}
        )
    return pd.DataFrame(rows)


def micro_average(table: pd.DataFrame) -> dict[str, float]:
    """Pooled precision, recall, F1 and exact agreement over all findings of a ``compare_labels`` table."""
    tp, fp, fn = (int(table[c].sum()) for c in ("tp", "fp", "fn"))
    n = int(table["n"].sum())
    return {
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "recall": tp / (tp + fn) if tp + fn else float("nan"),
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan"),
        "exact": float((table["exact"].fillna(0) * table["n"]).sum() / n) if n else float("nan"),
        "support": tp + fn,
        "n": n,
    }

