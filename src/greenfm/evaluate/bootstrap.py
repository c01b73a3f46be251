"""Patient-cluster bootstrap confidence intervals, vectorised over resamples.

A resample draws patients with replacement and takes all of their images, so an
image enters resample r with multiplicity ``counts[r, i]``. Scoring a resample is
therefore scoring the test set with integer sample weights, and AUROC and average
precision both have closed forms in weighted class totals per distinct score:

* AUROC (Mann-Whitney): sum over positives of the weight of negatives scoring
  lower, plus half of those tied, divided by (positive weight x negative weight).
* Average precision: sum over distinct thresholds, highest first, of
  (positive weight at the threshold / total positive weight) x precision there.

Sorting each finding's positives and negatives by score once, running sums of
their weights along each resample, looked up at every positive's score, give all
R values in a few integer array passes (ties count one half, as in sklearn).
sklearn has no weighted-resample fast path, hence the hand-written formulas;
tests check them against sklearn on materialised resamples to 1e-9.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from greenfm.errors import BadInputError
from greenfm.evaluate.metrics import BinaryColumns, BootstrapInfo, Metrics, Task, binary_columns, score_columns

# Resamples scored per block: bounds the (block, N) temporaries to a few tens of MB.
_BLOCK_ELEMENTS = 2_000_000


def patient_resample_counts(patient_ids: Sequence[Any], n_resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """(R, N) multiplicity of each image in R patient-cluster resamples.

    Each resample draws as many patients as there are, with replacement, from
    ``np.random.default_rng(seed)``; every image of a drawn patient is included.
    """
    _, patient_of_image = np.unique(np.asarray(patient_ids).astype(str), return_inverse=True)
    n_patients = int(patient_of_image.max()) + 1 if len(patient_of_image) else 0
    if n_patients == 0:
        raise BadInputError("cannot bootstrap an empty test set")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_patients, size=(n_resamples, n_patients))
    return counts_from_indices(draws, n_patients)[:, patient_of_image]


def image_resample_counts(n_images: int, n_resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """(R, N) multiplicities for an i.i.d. image bootstrap (each image its own cluster)."""
    return patient_resample_counts(np.arange(n_images), n_resamples, seed)


def counts_from_indices(indices: np.ndarray, n_items: int) -> np.ndarray:
    """(R, n_items) int32 counts from an (R, M) array of drawn item indices."""
    indices = np.asarray(indices, dtype=np.int64)
    n_resamples = indices.shape[0]
    flat = indices + (np.arange(n_resamples, dtype=np.int64) * n_items)[:, None]
    counts = np.bincount(flat.ravel(), minlength=n_resamples * n_items)
    return counts.reshape(n_resamples, n_items).astype(np.int32)


def weighted_auroc(y: Any, score: Any, weights: np.ndarray) -> np.ndarray:
    """AUROC of binary ``y`` vs ``score`` under each row of ``weights``; NaN if one class."""
    return _weighted_scores(y, score, weights)[0]


def weighted_average_precision(y: Any, score: Any, weights: np.ndarray) -> np.ndarray:
    """sklearn's average precision under each row of ``weights``; NaN if one class."""
    return _weighted_scores(y, score, weights)[1]


def bootstrap_columns(columns: BinaryColumns, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(R, K) AUROC and AUPRC of every column in every resample (NaN = degenerate)."""
    counts = _as_weights(counts)
    n_resamples, k = counts.shape[0], columns.targets.shape[1]
    auroc = np.full((n_resamples, k), np.nan)
    auprc = np.full((n_resamples, k), np.nan)
    for j in range(k):
        target = columns.targets[:, j]
        auroc[:, j], auprc[:, j] = _scores_by_index(
            np.flatnonzero(target == 1), np.flatnonzero(target == 0), columns.scores[:, j], counts
        )
    return auroc, auprc


def bootstrap_metrics(
    y_true: Any,
    y_score: Any,
    patient_ids: Sequence[Any] | None = None,
    *,
    task: Task = "auto",
    names: Sequence[str] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Metrics:
    """Point metrics on the full test set plus percentile CIs from a cluster bootstrap.

    ``patient_ids=None`` treats every image as its own patient (say so when
    reporting). Per finding, resamples where it has one class are left out of its
    CI and counted (``n_degenerate_resamples``). The macro value of a resample is
    the mean over the findings evaluable on the full set that are scorable in it;
    ``extra["n_resamples_with_degenerate_finding"]`` counts resamples missing any.
    """
    columns = binary_columns(y_true, y_score, task=task, names=names)
    n_images = columns.targets.shape[0]
    if patient_ids is None:
        clusters, cluster = np.arange(n_images), "image"
    else:
        clusters, cluster = np.asarray(patient_ids), "patient"
        if len(clusters) != n_images:
            raise BadInputError(f"{len(clusters)} patient ids for {n_images} images")
    counts = patient_resample_counts(clusters, n_resamples, seed)
    auroc, auprc = bootstrap_columns(columns, counts)
    return attach_intervals(
        score_columns(columns),
        auroc,
        auprc,
        BootstrapInfo(
            n_resamples=n_resamples,
            seed=seed,
            level=level,
            cluster=cluster,
            n_clusters=len(np.unique(clusters.astype(str))),
        ),
    )


def attach_intervals(metrics: Metrics, auroc: np.ndarray, auprc: np.ndarray, info: BootstrapInfo) -> Metrics:
    """Fill per-finding and macro percentile CIs into ``metrics`` from (R, K) samples."""
    tail = 100 * (1 - info.level) / 2
    evaluable = np.array([f.evaluable for f in metrics.findings], dtype=bool)
    for j, finding in enumerate(metrics.findings):
        finding.n_degenerate_resamples = int(np.isnan(auroc[:, j]).sum())
        if finding.evaluable:
            finding.auroc_ci = percentile_interval(auroc[:, j], tail)
            finding.auprc_ci = percentile_interval(auprc[:, j], tail)
    if evaluable.any():
        metrics.macro_auroc_ci = percentile_interval(nanmean_rows(auroc[:, evaluable]), tail)
        metrics.macro_auprc_ci = percentile_interval(nanmean_rows(auprc[:, evaluable]), tail)
        metrics.extra["n_resamples_with_degenerate_finding"] = int(np.isnan(auroc[:, evaluable]).any(axis=1).sum())
    metrics.bootstrap = info
    return metrics


def _weighted_scores(y: Any, score: Any, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(AUROC, AP) per row of ``weights`` (R, n) for binary ``y`` and ``score`` (n,)."""
    y = np.asarray(y).astype(bool)
    score = np.asarray(score, dtype=float)
    weights = _as_weights(weights)
    if weights.ndim != 2 or weights.shape[1] != len(y) or len(score) != len(y):
        raise BadInputError(f"weights must be (R, {len(y)}) for {len(y)} labels and scores, got {weights.shape}")
    return _scores_by_index(np.flatnonzero(y), np.flatnonzero(~y), score, weights)


def _as_weights(weights: Any) -> np.ndarray:
    """Integer multiplicities as int32 (int64 if a resample could overflow it), else float64."""
    weights = np.asarray(weights)
    if weights.size and weights.min() < 0:
        raise BadInputError("resample weights must be non-negative")
    if weights.dtype.kind in "biu":
        big = weights.size and int(weights.sum(axis=-1, dtype=np.int64).max()) >= 2**30
        return weights.astype(np.int64 if big else np.int32, copy=False)
    return weights.astype(np.float64, copy=False)


def _scores_by_index(
    positives: np.ndarray, negatives: np.ndarray, score: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(AUROC, AP) per resample; ``positives`` / ``negatives`` index columns of ``weights``.

    With positives and negatives each sorted by score, exclusive cumulative weights
    looked up at each positive's score give, per resample: the negative weight
    strictly below it and tied with it (AUROC), and the positive and total weight at
    or above it, i.e. the precision at its threshold (AP).
    """
    positives = positives[np.argsort(score[positives], kind="stable")]
    negatives = negatives[np.argsort(score[negatives], kind="stable")]
    pos_score, neg_score = score[positives], score[negatives]
    neg_below = np.searchsorted(neg_score, pos_score, "left")
    neg_not_above = np.searchsorted(neg_score, pos_score, "right")
    pos_below = np.searchsorted(pos_score, pos_score, "left")

    n_resamples = weights.shape[0]
    block = max(1, _BLOCK_ELEMENTS // max(1, len(positives) + len(negatives)))
    auroc = np.empty(n_resamples)
    ap = np.empty(n_resamples)
    for lo in range(0, n_resamples, block):
        # integer gathers and running sums: exact, and several times faster than a
        # float cumsum (bound by add latency); `_as_weights` rules out int32 overflow
        w = weights[lo : lo + block]
        w_pos = w[:, positives]
        cum_neg = _exclusive_cumsum(w[:, negatives])
        cum_pos = _exclusive_cumsum(w_pos)
        total_pos, total_neg = cum_pos[:, -1], cum_neg[:, -1]
        below = cum_neg[:, neg_below]
        # negatives below plus half of those tied = (below + not above) / 2
        pairs = 0.5 * np.einsum("rj,rj->r", w_pos, below + cum_neg[:, neg_not_above], dtype=np.float64)
        pos_at_or_above = total_pos[:, None] - cum_pos[:, pos_below]
        all_at_or_above = pos_at_or_above + (total_neg[:, None] - below)
        # a positive with weight > 0 makes all_at_or_above > 0; weight-0 ones add nothing
        precision = np.divide(
            pos_at_or_above, all_at_or_above, out=np.zeros(all_at_or_above.shape), where=all_at_or_above > 0
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            auroc[lo : lo + block] = pairs / (total_pos.astype(np.float64) * total_neg)
            ap[lo : lo + block] = np.einsum("rj,rj->r", w_pos, precision, dtype=np.float64) / total_pos
        degenerate = (total_pos == 0) | (total_neg == 0)
        auroc[lo : lo + block][degenerate] = np.nan
        ap[lo : lo + block][degenerate] = np.nan
    return auroc, ap


def _exclusive_cumsum(w: np.ndarray) -> np.ndarray:
    """(R, n) -> (R, n + 1) cumulative sums along rows, starting at 0 (dtype kept)."""
    out = np.empty((w.shape[0], w.shape[1] + 1), dtype=w.dtype)
    out[:, 0] = 0
    np.cumsum(w, axis=1, dtype=w.dtype, out=out[:, 1:])
    return out


def percentile_interval(values: np.ndarray, tail: float = 2.5) -> tuple[float, float] | None:
    """The (tail, 100 - tail) percentiles of the finite values (None when there are none): 95% by default."""
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def nanmean_rows(values: np.ndarray) -> np.ndarray:
    """Mean over the finite entries of each row (NaN for a row with none): the macro of each resample."""
    scored = np.isfinite(values)
    total = np.where(scored, values, 0.0).sum(axis=1)
    n = scored.sum(axis=1)
    return np.divide(total, n, out=np.full(len(total), np.nan), where=n > 0)
