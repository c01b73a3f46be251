"""Per-finding AUROC / AUPRC: equal to sklearn, NaN / -1 ignored, one-class findings skipped."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from greenfm.errors import BadInputError
from greenfm.evaluate.metrics import binary_metrics, compute_metrics, multiclass_metrics, multilabel_metrics


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_binary_equals_sklearn_with_ties(rng):
    y = rng.random(300) < 0.3
    score = np.round(rng.normal(size=300) + y, 1)  # many tied scores
    m = binary_metrics(y, score, name="effusion")
    f = m["effusion"]
    assert f.auroc == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert f.auprc == pytest.approx(average_precision_score(y, score), abs=1e-12)
    assert f.prevalence == pytest.approx(y.mean())
    assert (m.n_evaluable, m.n_classes) == (1, 1)


def test_binary_accepts_a_two_column_probability_matrix(rng):
    y = rng.random(100) < 0.5
    p1 = rng.random(100)
    assert compute_metrics(y, np.c_[1 - p1, p1]).macro_auroc == pytest.approx(roc_auc_score(y, p1))


def test_multilabel_ignores_nan_and_uncertain_per_finding(rng):
    y = (rng.random((400, 3)) < 0.4).astype(float)
    s = rng.normal(size=(400, 3)) + y
    y[rng.random((400, 3)) < 0.2] = np.nan
    y[rng.random((400, 3)) < 0.1] = -1
    m = multilabel_metrics(y, s, findings=["a", "b", "c"])
    for j, f in enumerate(m.findings):
        keep = np.isin(y[:, j], [0, 1])
        assert f.n == keep.sum()
        assert f.auroc == pytest.approx(roc_auc_score(y[keep, j], s[keep, j]), abs=1e-12)
        assert f.auprc == pytest.approx(average_precision_score(y[keep, j], s[keep, j]), abs=1e-12)
    assert m.macro_auroc == pytest.approx(np.mean([f.auroc for f in m.findings]))


def test_one_class_and_unlabelled_findings_are_skipped_and_counted_never_half(rng):
    y = (rng.random((200, 3)) < 0.5).astype(float)
    s = rng.normal(size=(200, 3)) + y
    y[:, 1] = 0  # only negatives
    y[:, 2] = np.nan  # nothing labelled
    m = multilabel_metrics(y, s, findings=["a", "b", "c"])
    assert (m.n_evaluable, m.n_classes) == (1, 3)
    assert m["b"].auroc is None and m["b"].skipped == "only one class present"
    assert m["c"].auroc is None and m["c"].skipped == "no labelled images"
    assert m["b"].prevalence == 0.0 and m["c"].prevalence is None
    assert m.macro_auroc == pytest.approx(m["a"].auroc)  # the mean runs over evaluable findings only


def test_multiclass_macro_equals_sklearn_ovr(rng):
    y = rng.integers(0, 4, 300)
    logits = rng.normal(size=(300, 4))
    logits[np.arange(300), y] += 1.0
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    m = multiclass_metrics(y, proba, classes=["g0", "g1", "g2", "g3"])
    assert m.macro_auroc == pytest.approx(roc_auc_score(y, proba, multi_class="ovr", average="macro"), abs=1e-12)
    assert m["g2"].auroc == pytest.approx(roc_auc_score(y == 2, proba[:, 2]))


def test_multiclass_class_missing_from_test_is_skipped(rng):
    y = rng.integers(0, 3, 200)  # class 3 never occurs
    proba = rng.dirichlet(np.ones(4), size=200)
    m = multiclass_metrics(y, proba)
    assert (m.n_evaluable, m.n_classes) == (3, 4)
    assert m["3"].skipped == "only one class present"


def test_result_serialises_to_strict_json_and_a_frame(rng):
    y = np.c_[rng.random(50) < 0.5, np.zeros(50)]
    m = multilabel_metrics(y, rng.normal(size=(50, 2)), findings=["a", "b"])
    data = json.loads(m.to_json())  # strict JSON: no NaN
    assert data["n_evaluable"] == 1 and data["findings"][1]["auroc"] is None
    frame = m.to_frame()
    assert list(frame["name"]) == ["a", "b"] and {"auroc_low", "auroc_high", "prevalence"} <= set(frame.columns)


def test_bad_inputs_raise_clear_errors(rng):
    with pytest.raises(BadInputError, match="1, 0, -1 or empty"):
        binary_metrics(np.array([0, 1, 2]), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(BadInputError, match="NaN or infinite"):
        binary_metrics(np.array([0, 1, 1]), np.array([0.1, np.nan, 0.3]))
    with pytest.raises(BadInputError, match="labels but"):
        binary_metrics(np.array([0, 1]), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(BadInputError, match=r"integers 0\.\.2"):
        multiclass_metrics(np.array([0, 1, 5]), np.eye(3))
