"""RETFound-Green comparison: same 100 resamples for every model, median, Wilcoxon verdict."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import wilcoxon
from sklearn.metrics import roc_auc_score

from greenfm.errors import BadInputError
from greenfm.evaluate.comparison import (
    rfg_bootstrap_aurocs,
    rfg_compare,
    rfg_resample_indices,
    seed_summaries,
    seed_summary,
)
from greenfm.evaluate.metrics import multilabel_metrics


@pytest.fixture
def multiclass():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 150)

    def proba(strength):
        logits = rng.normal(size=(150, 3))
        logits[np.arange(150), y] += strength
        return np.exp(logits) / np.exp(logits).sum(1, keepdims=True)

    return y, {"weak": proba(0.3), "strong": proba(2.0), "middle": proba(1.0)}


def test_resamples_are_the_official_fresh_randomstate_42_draws():
    rng = np.random.RandomState(42)
    idxs = list(range(37))
    expected = np.stack([rng.choice(idxs, size=len(idxs), replace=True) for _ in range(100)])
    np.testing.assert_array_equal(rfg_resample_indices(37), expected)
    np.testing.assert_array_equal(rfg_resample_indices(37), rfg_resample_indices(37))  # deterministic


def test_bootstrap_aurocs_equal_sklearn_ovr_macro_per_resample(multiclass):
    y, scores = multiclass
    aurocs, kept = rfg_bootstrap_aurocs(y, scores["middle"], n_resamples=20)
    assert kept.all()
    for r, idx in enumerate(rfg_resample_indices(len(y), 20)):
        expected = roc_auc_score(y[idx], scores["middle"][idx], multi_class="ovr", average="macro")
        assert aurocs[r] == pytest.approx(expected, abs=1e-9)


def test_compare_ranks_by_median_and_tests_the_top_two(multiclass):
    y, scores = multiclass
    result = rfg_compare(y, scores)
    assert [m.name for m in result.models] == ["strong", "middle", "weak"]
    assert result.best == "strong" and result.runner_up == "middle"
    assert result.n_resamples == 100 and result.n_skipped == 0 and result.seed == 42
    strong, middle = result.models[0], result.models[1]
    assert strong.median_auroc == pytest.approx(np.median(strong.aurocs))
    assert result.p_value == pytest.approx(wilcoxon(strong.aurocs, middle.aurocs).pvalue)
    assert result.verdict == "win"
    assert rfg_compare(y, scores).to_dict() == result.to_dict()  # deterministic


def test_every_model_sees_identical_resamples(multiclass):
    y, scores = multiclass
    result = rfg_compare(y, {"a": scores["middle"], "b": scores["middle"].copy()})
    assert result.models[0].aurocs == result.models[1].aurocs
    assert result.p_value == 1.0 and result.verdict == "tie"


def test_resamples_lacking_a_class_are_skipped_and_counted():
    rng = np.random.default_rng(3)
    y = np.zeros(40)
    y[:2] = 1  # a resample often draws neither positive
    scores = {"a": rng.random(40) + y, "b": rng.random(40)}
    result = rfg_compare(y, scores)
    lacking = sum(y[idx].sum() == 0 for idx in rfg_resample_indices(40))
    assert result.n_skipped == lacking > 0
    assert len(result.models[0].aurocs) == 100 - lacking


def test_bad_inputs():
    with pytest.raises(BadInputError, match="no models"):
        rfg_compare(np.array([0, 1]), {})
    with pytest.raises(BadInputError, match="lacks a class"):
        rfg_compare(np.zeros(10), {"a": np.arange(10.0)})


def test_seed_summary_gives_mean_and_spread():
    s = seed_summary({0: 0.80, 1: 0.82, 2: 0.84})
    assert s.n_seeds == 3 and s.mean == pytest.approx(0.82)
    assert s.std == pytest.approx(0.02) and (s.min, s.max) == (0.80, 0.84)
    assert seed_summary([0.7]).std is None
    with pytest.raises(BadInputError):
        seed_summary([0.7, float("nan")])


def test_seed_summaries_per_finding_and_macro():
    rng = np.random.default_rng(4)
    y = (rng.random((200, 2)) < 0.4).astype(float)
    by_seed = {
        seed: multilabel_metrics(y, y + rng.normal(size=y.shape) * (1 + seed), findings=["a", "b"]) for seed in range(3)
    }
    summaries = seed_summaries(by_seed)
    assert set(summaries) == {"a", "b", "macro"}
    assert summaries["a"].mean == pytest.approx(np.mean([by_seed[s]["a"].auroc for s in range(3)]))
    assert summaries["macro"].max == pytest.approx(max(m.macro_auroc for m in by_seed.values()))
