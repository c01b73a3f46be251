"""Patient-cluster bootstrap: the vectorised scores equal a naive sklearn loop."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from greenfm.evaluate.bootstrap import (
    bootstrap_columns,
    bootstrap_metrics,
    counts_from_indices,
    patient_resample_counts,
    weighted_auroc,
    weighted_average_precision,
)
from greenfm.evaluate.metrics import binary_columns


@pytest.fixture
def rng():
    return np.random.default_rng(1)


def _naive(y, s, counts, metric):
    """sklearn on each resample materialised as repeated indices; NaN when one class."""
    out = []
    for row in counts:
        idx = np.repeat(np.arange(len(y)), row)
        yy, ss = y[idx], s[idx]
        keep = np.isin(yy, [0, 1])
        yy, ss = yy[keep], ss[keep]
        out.append(metric(yy, ss) if 0 < yy.sum() < len(yy) else np.nan)
    return np.array(out)


def test_weighted_scores_equal_sklearn_on_random_resamples_with_ties(rng):
    y = (rng.random(300) < 0.25).astype(float)
    s = np.round(rng.normal(size=300) + y, 1)  # ties within and across classes
    counts = patient_resample_counts(rng.integers(0, 90, 300), n_resamples=40, seed=3)
    np.testing.assert_allclose(weighted_auroc(y, s, counts), _naive(y, s, counts, roc_auc_score), atol=1e-9)
    np.testing.assert_allclose(
        weighted_average_precision(y, s, counts), _naive(y, s, counts, average_precision_score), atol=1e-9
    )


def test_vectorised_bootstrap_equals_naive_loop_for_the_same_indices(rng):
    n = 120
    y = (rng.random((n, 3)) < 0.3).astype(float)
    s = rng.normal(size=(n, 3)) + y
    y[rng.random((n, 3)) < 0.15] = np.nan
    y[rng.random((n, 3)) < 0.05] = -1
    y[:, 2] = 0
    y[:4, 2] = 1  # a rare finding: some resamples draw none of its positives
    indices = rng.integers(0, n, size=(30, n))
    counts = counts_from_indices(indices, n)
    auroc, auprc = bootstrap_columns(binary_columns(y, s, task="multilabel"), counts)
    for j in range(3):
        np.testing.assert_allclose(auroc[:, j], _naive(y[:, j], s[:, j], counts, roc_auc_score), atol=1e-9)
        np.testing.assert_allclose(auprc[:, j], _naive(y[:, j], s[:, j], counts, average_precision_score), atol=1e-9)
    assert np.isnan(auroc[:, 2]).any()  # degenerate resamples are NaN, not 0.5


def test_counts_keep_every_image_of_a_drawn_patient():
    patients = np.array(["p1", "p1", "p2", "p3", "p3", "p3"])
    counts = patient_resample_counts(patients, n_resamples=50, seed=0)
    assert counts.shape == (50, 6)
    assert (counts[:, 0] == counts[:, 1]).all() and (counts[:, 3] == counts[:, 5]).all()
    per_patient = counts[:, [0, 2, 3]]
    assert (per_patient.sum(axis=1) == 3).all()  # three patients drawn per resample
    np.testing.assert_array_equal(counts, patient_resample_counts(patients, n_resamples=50, seed=0))


def test_degenerate_resamples_are_counted_and_recorded(rng):
    n = 60
    y = np.zeros(n)
    y[:2] = 1  # two positive images of one patient
    patients = np.r_[[0, 0], np.arange(1, n - 1)]
    s = rng.normal(size=n) + y
    m = bootstrap_metrics(y, s, patients, n_resamples=300, seed=5)
    counts = patient_resample_counts(patients, 300, 5)
    expected = int((counts[:, :2].sum(axis=1) == 0).sum())
    f = m.findings[0]
    assert f.n_degenerate_resamples == expected > 0
    assert m.bootstrap.n_resamples == 300 and m.bootstrap.seed == 5 and m.bootstrap.cluster == "patient"
    assert m.bootstrap.n_clusters == n - 1


def test_ci_contains_the_point_estimate_and_narrows_with_more_images(rng):
    widths = []
    for n in (200, 3000):
        y = (rng.random(n) < 0.3).astype(float)
        s = rng.normal(size=n) + y
        m = bootstrap_metrics(y, s, np.arange(n), n_resamples=500, seed=0)
        f = m.findings[0]
        assert f.auroc_ci[0] <= f.auroc <= f.auroc_ci[1]
        assert f.auprc_ci[0] <= f.auprc <= f.auprc_ci[1]
        assert m.macro_auroc_ci == pytest.approx(f.auroc_ci)
        widths.append(f.auroc_ci[1] - f.auroc_ci[0])
    assert widths[1] < 0.5 * widths[0]


def test_cluster_bootstrap_is_wider_than_iid_when_a_patients_images_agree(rng):
    n_patients, per_patient = 150, 8
    patients = np.repeat(np.arange(n_patients), per_patient)
    y = np.repeat(rng.random(n_patients) < 0.4, per_patient).astype(float)
    # each patient's images share one patient-level score: strongly correlated
    s = np.repeat(rng.normal(size=n_patients), per_patient) + 0.8 * y + 0.05 * rng.normal(size=len(y))
    cluster = bootstrap_metrics(y, s, patients, n_resamples=400, seed=0).findings[0].auroc_ci
    iid = bootstrap_metrics(y, s, None, n_resamples=400, seed=0).findings[0].auroc_ci
    assert (cluster[1] - cluster[0]) > 1.8 * (iid[1] - iid[0])


def test_macro_ci_over_evaluable_findings(rng):
    y = (rng.random((300, 3)) < 0.4).astype(float)
    y[:, 1] = 1  # one class only: skipped, no CI
    s = rng.normal(size=(300, 3)) + y
    m = bootstrap_metrics(y, s, np.arange(300) // 3, n_resamples=200, seed=0)
    assert m.findings[1].auroc_ci is None and m.n_evaluable == 2
    low, high = m.macro_auroc_ci
    assert low <= m.macro_auroc <= high
