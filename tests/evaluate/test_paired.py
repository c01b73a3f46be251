"""Paired patient-bootstrap comparison of two probes on the same test images."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from greenfm.errors import BadInputError
from greenfm.evaluate.bootstrap import bootstrap_metrics
from greenfm.evaluate.paired import paired_comparison


def _predictions(labels: np.ndarray, scores: np.ndarray, patients: np.ndarray) -> pd.DataFrame:
    frames = [
        pd.DataFrame({"id": [f"img{i:04d}" for i in range(len(labels))], "patient_id": patients, "split": "test",
                      "finding": name, "label": labels[:, j], "score": scores[:, j]})
        for j, name in enumerate(["effusion", "nodule"])
    ]  # fmt: skip
    return pd.concat(frames, ignore_index=True)


@pytest.fixture
def test_set():
    rng = np.random.default_rng(0)
    n = 400
    patients = np.repeat([f"p{i:03d}" for i in range(n // 2)], 2)
    labels = (rng.random((n, 2)) < 0.3).astype(float)
    labels[rng.random((n, 2)) < 0.05] = -1  # uncertain: ignored
    weak = labels.clip(0) * 0.4 + rng.normal(size=(n, 2))
    strong = weak + 0.3 * labels.clip(0) + 0.3 * rng.normal(size=(n, 2))  # shares most of weak's errors
    return labels, weak, strong, patients


def test_a_better_model_gets_a_positive_paired_ci_narrower_than_either_models_own(test_set):
    labels, weak, strong, patients = test_set
    result = paired_comparison(_predictions(labels, weak, patients), _predictions(labels, strong, patients),
                               model_a="weak", model_b="strong", n_resamples=300, seed=0)  # fmt: skip
    macro = result.macro
    assert [row.name for row in result.rows] == ["effusion", "nodule", "macro"]
    assert macro.difference == pytest.approx(macro.auroc_b - macro.auroc_a)
    assert macro.difference_ci[0] > 0 and macro.verdict == "b better" and macro.p_bootstrap < 0.01
    paired_width = macro.difference_ci[1] - macro.difference_ci[0]
    assert paired_width < macro.ci_a[1] - macro.ci_a[0]
    assert result.n_patients == 200 and result.n_images == 400
    assert result.wilcoxon["best"] == "strong"


def test_each_models_ci_is_the_patient_bootstrap_of_the_probe(test_set):
    labels, weak, strong, patients = test_set
    result = paired_comparison(_predictions(labels, weak, patients), _predictions(labels, strong, patients),
                               n_resamples=200, seed=3, wilcoxon=False)  # fmt: skip
    alone = bootstrap_metrics(np.where(labels == -1, np.nan, labels), weak, patients, task="multilabel",
                              names=["effusion", "nodule"], n_resamples=200, seed=3)  # fmt: skip
    assert result.macro.ci_a == pytest.approx(alone.macro_auroc_ci)
    assert result.rows[0].ci_a == pytest.approx(alone.findings[0].auroc_ci)


def test_identical_models_differ_by_exactly_nothing(test_set):
    labels, weak, _, patients = test_set
    predictions = _predictions(labels, weak, patients)
    macro = paired_comparison(predictions, predictions.copy(), n_resamples=100).macro
    assert macro.difference == 0 and macro.difference_ci == (0.0, 0.0) and macro.p_bootstrap == 1.0
    assert macro.verdict == "no clear difference"


def test_models_scored_on_different_images_are_refused(test_set):
    labels, weak, strong, patients = test_set
    other = _predictions(labels, strong, patients)
    other.loc[other["id"] == "img0000", "id"] = "elsewhere"
    with pytest.raises(BadInputError, match="same test images"):
        paired_comparison(_predictions(labels, weak, patients), other)


def test_the_bootstrap_p_ignores_undefined_resamples():
    from greenfm.evaluate.paired import bootstrap_p

    assert bootstrap_p(np.array([0.1, 0.2, np.nan, 0.3])) == 0.0
    assert bootstrap_p(np.array([-0.1, 0.1, np.nan, np.nan])) == 1.0
    assert np.isnan(bootstrap_p(np.array([np.nan, np.nan]))) and np.isnan(bootstrap_p(np.array([])))


def test_seeds_that_disagree_widen_the_interval_beyond_the_test_set_alone():
    from greenfm.evaluate.bootstrap import percentile_interval
    from greenfm.evaluate.paired import mean_over_drawn_seeds

    # no test-set variation at all; seed 0 finds no difference, seed 1 a difference of 1
    differences = np.column_stack([np.zeros(2000), np.ones(2000)])
    assert percentile_interval(differences.mean(axis=1)) == (0.5, 0.5)  # seeds averaged as they are
    drawn = mean_over_drawn_seeds(differences, seed=0)
    assert set(np.unique(drawn)) == {0.0, 0.5, 1.0} and percentile_interval(drawn) == (0.0, 1.0)
    assert np.array_equal(drawn, mean_over_drawn_seeds(differences, seed=0))  # seeded
    assert np.array_equal(mean_over_drawn_seeds(differences[:, :1], seed=0), np.zeros(2000))  # one seed: as is
