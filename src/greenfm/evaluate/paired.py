"""Two models scored on the same test images: AUROC of each and of their difference, paired.

Both models are scored on the *same* patient-bootstrap resamples (a resample draws
patients with replacement and takes all their images), so each resample yields a
difference ``AUROC(b) - AUROC(a)`` and the percentile interval of those differences
is a paired 95% CI. Pairing removes the test-set variability the two models share,
which is most of it: the CI of the difference is far narrower than either model's own
CI, and it, not whether the two CIs overlap, says whether ``b`` beats ``a``.

``p_bootstrap`` is the two-sided bootstrap p-value of "no difference" (twice the
smaller share of resamples on either side of 0). RETFound-Green's own comparison
(Wilcoxon signed-rank on 100 image-level resamples, ``greenfm.evaluate.comparison``)
is added for the macro AUROC, as that paper reports it.

Inputs are the long ``predictions`` tables of two probes (``id, patient_id, split,
finding, label, score``), as ``ProbeResult.predictions`` and ``predictions.parquet``.

Over training seeds (``seed_averaged_difference``): each seed's macro AUROC of A and
of B on one shared set of patient resamples gives per resample and seed a paired
difference; each resample also draws the seeds with replacement and averages their
differences, so the interval covers both the test set and training. With the usual
2-3 seeds the seed part is coarse and, like any bootstrap of S values, understates
the spread by a factor of about (S - 1) / S in variance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from greenfm.errors import BadInputError
from greenfm.evaluate.bootstrap import (
    bootstrap_columns,
    nanmean_rows,
    patient_resample_counts,
    percentile_interval,
)
from greenfm.evaluate.comparison import rfg_compare
from greenfm.evaluate.metrics import BinaryColumns, json_safe, score_columns

MACRO = "macro"


@dataclass
class PairedRow:
    """One finding (or the macro mean): each model's AUROC with its CI, and the paired difference."""

    name: str
    n_test: int
    n_positive: int
    auroc_a: float | None
    ci_a: tuple[float, float] | None
    auroc_b: float | None
    ci_b: tuple[float, float] | None
    difference: float | None
    difference_ci: tuple[float, float] | None
    p_bootstrap: float | None

    @property
    def verdict(self) -> str:
        return verdict(self.difference_ci)


def verdict(difference_ci: tuple[float, float] | None) -> str:
    """``b better`` / ``a better`` when the paired CI of B - A excludes 0, else ``no clear difference``."""
    if difference_ci is None:
        return "not evaluable"
    low, high = difference_ci
    return "b better" if low > 0 else "a better" if high < 0 else "no clear difference"


@dataclass
class PairedComparison:
    """Per-finding and macro rows, how the resamples were drawn, and the Wilcoxon check."""

    model_a: str
    model_b: str
    rows: list[PairedRow]
    n_resamples: int
    seed: int
    n_patients: int
    n_images: int
    wilcoxon: dict[str, Any] | None = None

    @property
    def macro(self) -> PairedRow:
        return next(row for row in self.rows if row.name == MACRO)

    def to_dict(self) -> dict[str, Any]:
        rows = [asdict(row) | {"verdict": row.verdict} for row in self.rows]
        return json_safe({**asdict(self), "rows": rows, "level": 0.95, "cluster": "patient"})


def paired_comparison(
    predictions_a: pd.DataFrame,
    predictions_b: pd.DataFrame,
    *,
    model_a: str = "a",
    model_b: str = "b",
    split: str = "test",
    n_resamples: int = 1000,
    seed: int = 0,
    wilcoxon: bool = True,
) -> PairedComparison:
    """Compare two probes' scores on the same ``split`` images with one set of patient resamples."""
    scored_a, scored_b = scored_split(predictions_a, split), scored_split(predictions_b, split)
    check_same_images(scored_a, scored_b, split)
    columns_a, columns_b, patients = scored_a.columns, scored_b.columns, scored_a.patients
    targets = columns_a.targets

    counts = patient_resample_counts(patients, n_resamples, seed)
    boot_a, _ = bootstrap_columns(columns_a, counts)
    boot_b, _ = bootstrap_columns(columns_b, counts)
    point_a, point_b = score_columns(columns_a), score_columns(columns_b)

    rows = []
    for j, (fa, fb) in enumerate(zip(point_a.findings, point_b.findings)):
        rows.append(_row(fa.name, fa.n, fa.n_positive, fa.auroc, fb.auroc, boot_a[:, j], boot_b[:, j]))
    evaluable = np.array([f.evaluable for f in point_a.findings])
    if evaluable.any():
        rows.append(_row(MACRO, len(targets), int(np.nansum(targets == 1)), point_a.macro_auroc, point_b.macro_auroc,
                         nanmean_rows(boot_a[:, evaluable]), nanmean_rows(boot_b[:, evaluable])))  # fmt: skip
    result = PairedComparison(
        model_a=model_a, model_b=model_b, rows=rows, n_resamples=n_resamples, seed=seed,
        n_patients=len(np.unique(patients)), n_images=len(targets),
    )  # fmt: skip
    if wilcoxon and evaluable.any():
        result.wilcoxon = _rfg_wilcoxon(targets[:, evaluable], columns_a.scores[:, evaluable],
                                        columns_b.scores[:, evaluable], model_a, model_b)  # fmt: skip
    return result


@dataclass
class ScoredSplit:
    """One model's scores on one split, as binary columns (image x finding, sorted by id), and each image's patient."""

    ids: pd.Index
    columns: BinaryColumns
    patients: np.ndarray


def scored_split(predictions: pd.DataFrame, split: str = "test") -> ScoredSplit:
    """A long predictions table (``id, patient_id, split, finding, label, score``) -> one split, wide.

    Labels of -1 (uncertain) are left out of every AUROC, as in the probes.
    """
    missing = {"id", "patient_id", "split", "finding", "label", "score"} - set(predictions.columns)
    if missing:
        raise BadInputError(f"predictions lack column(s) {sorted(missing)}")
    rows = predictions[predictions["split"] == split]
    if rows.empty:
        raise BadInputError(f"no predictions on the {split} split")
    findings = list(dict.fromkeys(rows["finding"]))  # the probe's (manifest) order
    labels = rows.pivot(index="id", columns="finding", values="label").sort_index()[findings]
    scores = rows.pivot(index="id", columns="finding", values="score").loc[labels.index, findings]
    patients = rows.drop_duplicates("id").set_index("id").loc[labels.index, "patient_id"].astype(str).to_numpy()
    targets = labels.to_numpy(dtype=float)
    targets = np.where(targets == -1, np.nan, targets)
    columns = BinaryColumns(targets, scores.to_numpy(dtype=float), findings, "multilabel")
    return ScoredSplit(labels.index, columns, patients)


def check_same_images(a: ScoredSplit, b: ScoredSplit, split: str = "test") -> None:
    """Refuse a pairing of scores that were not made on the same images, findings and labels."""
    if not a.ids.equals(b.ids) or list(a.columns.names) != list(b.columns.names):
        raise BadInputError(f"the two models were not scored on the same {split} images and findings")
    if not np.array_equal(a.columns.targets, b.columns.targets, equal_nan=True):
        raise BadInputError(f"the two models' {split} labels differ; compare models scored on one manifest")


def _row(name, n, n_positive, auroc_a, auroc_b, boot_a: np.ndarray, boot_b: np.ndarray) -> PairedRow:
    both = np.isfinite(boot_a) & np.isfinite(boot_b)
    diff = (boot_b - boot_a)[both]
    scored = auroc_a is not None and auroc_b is not None and len(diff) > 0
    return PairedRow(
        name=name,
        n_test=int(n),
        n_positive=int(n_positive),
        auroc_a=auroc_a,
        ci_a=percentile_interval(boot_a),
        auroc_b=auroc_b,
        ci_b=percentile_interval(boot_b),
        difference=auroc_b - auroc_a if scored else None,
        difference_ci=percentile_interval(diff) if scored else None,
        p_bootstrap=bootstrap_p(diff) if scored else None,
    )


def bootstrap_p(differences: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "no difference": twice the smaller share of the finite
    resampled differences on either side of 0 (NaN when there are none). 0 means below 1 / R."""
    finite = np.asarray(differences, dtype=float)
    finite = finite[np.isfinite(finite)]
    if not len(finite):
        return float("nan")
    return min(1.0, 2 * min(float((finite <= 0).mean()), float((finite >= 0).mean())))


def _rfg_wilcoxon(targets, scores_a, scores_b, model_a: str, model_b: str) -> dict[str, Any] | None:
    """RETFound-Green's check on the macro AUROC: medians over 100 image resamples, Wilcoxon p."""
    try:
        comparison = rfg_compare(targets, {model_a: scores_a, model_b: scores_b}, task="multilabel")
    except BadInputError as err:  # a test set too small for every resample to hold both classes
        return {"skipped": str(err)}
    out = comparison.to_dict()
    out["note"] = ("image-level resamples (patients not kept together); a Wilcoxon test over bootstrap "
                   "replicates overstates significance: read the paired patient-bootstrap CI")  # fmt: skip
    return out


def macro_on_resamples(scored: ScoredSplit, counts: np.ndarray) -> tuple[float, np.ndarray]:
    """The macro AUROC of one model and its value on every resample of ``counts`` (NaN where not evaluable)."""
    point = score_columns(scored.columns)
    boot, _ = bootstrap_columns(scored.columns, counts)
    evaluable = np.array([f.evaluable for f in point.findings])
    if not evaluable.any() or point.macro_auroc is None:
        raise BadInputError("a cell's test predictions hold no finding with both classes")
    return float(point.macro_auroc), nanmean_rows(boot[:, evaluable])


@dataclass
class SeedAveragedDifference:
    """Mean macro AUROC of A and B over training seeds, and the paired difference with its 95% CI."""

    auroc_a: float
    auroc_b: float
    difference: float
    difference_ci: tuple[float, float] | None
    p_bootstrap: float
    seed_differences: list[float]


def seed_averaged_difference(
    resampled_a: Sequence[tuple[float, np.ndarray]],
    resampled_b: Sequence[tuple[float, np.ndarray]],
    seed: int,
) -> SeedAveragedDifference:
    """A and B per training seed, each as (macro AUROC, its value on the shared resamples): the
    difference B - A averaged over seeds, with the CI and p of its seed-and-patient bootstrap."""
    point_a = [macro for macro, _ in resampled_a]
    point_b = [macro for macro, _ in resampled_b]
    point_diffs = [b - a for a, b in zip(point_a, point_b)]
    boot_diffs = [boot_b - boot_a for (_, boot_a), (_, boot_b) in zip(resampled_a, resampled_b)]
    mean_boot = mean_over_drawn_seeds(np.stack(boot_diffs, axis=1), seed)
    return SeedAveragedDifference(
        auroc_a=float(np.mean(point_a)), auroc_b=float(np.mean(point_b)), difference=float(np.mean(point_diffs)),
        difference_ci=percentile_interval(mean_boot), p_bootstrap=bootstrap_p(mean_boot),
        seed_differences=point_diffs,
    )  # fmt: skip


def mean_over_drawn_seeds(differences: np.ndarray, seed: int) -> np.ndarray:
    """(R, S) differences per patient resample and seed -> (R,) means over S seeds drawn with replacement."""
    n_resamples, n_seeds = differences.shape
    if n_seeds == 1:
        return differences[:, 0]
    drawn = np.random.default_rng([seed, n_seeds]).integers(0, n_seeds, size=(n_resamples, n_seeds))
    return nanmean_rows(np.take_along_axis(differences, drawn, axis=1))
