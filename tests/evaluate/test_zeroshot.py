"""Zero-shot scoring: the softmax over a prompt pair, AUROC with patient-bootstrap CIs, honest skipping."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from greenfm.errors import BadInputError, ConfigError
from greenfm.evaluate.image_text_results import write_zeroshot_results
from greenfm.evaluate.metrics import ONE_CLASS
from greenfm.evaluate.prompts import prompt_pairs
from greenfm.evaluate.zeroshot import score_zeroshot, zeroshot_probabilities

FINDINGS = ["effusion", "nodule", "edema"]


def _aligned(n=400, d=32, k=3, strength=2.5, seed=0):
    """Images of positive cases lean toward the positive prompt, negatives toward the negative one."""
    rng = np.random.default_rng(seed)
    positive, negative = rng.normal(size=(k, d)), rng.normal(size=(k, d))
    labels = (rng.random((n, k)) < 0.3).astype(float)
    direction = positive - negative
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    images = rng.normal(size=(n, d)) + strength * (2 * labels - 1) @ direction
    patients = np.arange(n) // 2  # two images per patient
    return images, positive, negative, labels, patients


@pytest.mark.parametrize("normalize", [False, True])
def test_probabilities_equal_an_explicit_softmax(normalize):
    rng = np.random.default_rng(0)
    images, positive, negative = rng.normal(size=(7, 5)), rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
    p = zeroshot_probabilities(images, positive, negative, normalize=normalize)
    v, tp, tn = (torch.tensor(a) for a in (images, positive, negative))
    if normalize:
        v, tp, tn = (torch.nn.functional.normalize(a, dim=1) for a in (v, tp, tn))
    logits = torch.stack([v @ tp.T, v @ tn.T], dim=-1)  # (N, K, 2)
    expected = torch.softmax(logits, dim=-1)[..., 0].numpy()
    assert p.shape == (7, 4)
    np.testing.assert_allclose(p, expected, rtol=1e-12, atol=1e-12)
    # the same from torch tensors
    np.testing.assert_allclose(
        zeroshot_probabilities(torch.tensor(images), torch.tensor(positive), torch.tensor(negative),
                               normalize=normalize), p, rtol=1e-6)  # fmt: skip


def test_probabilities_are_stable_for_huge_unnormalised_latents():
    rng = np.random.default_rng(1)
    images = 1e4 * rng.normal(size=(50, 8))
    p = zeroshot_probabilities(images, rng.normal(size=(3, 8)), rng.normal(size=(3, 8)), normalize=False)
    assert np.isfinite(p).all() and p.min() >= 0 and p.max() <= 1
    assert ((p == 0) | (p == 1)).mean() > 0.5  # saturated, yet no overflow warning or NaN


def test_aligned_embeddings_score_near_one_with_patient_intervals():
    images, positive, negative, labels, patients = _aligned()
    p = zeroshot_probabilities(images, positive, negative, normalize=False)
    metrics = score_zeroshot(p, labels, patients, FINDINGS, n_resamples=200, seed=0)
    assert metrics.n_evaluable == 3 and metrics.macro_auroc > 0.95
    assert all(f.auroc > 0.95 and f.auroc_ci[0] > 0.9 for f in metrics.findings)
    assert metrics.macro_auroc_ci[0] > 0.9
    assert metrics.bootstrap.cluster == "patient" and metrics.bootstrap.n_clusters == 200
    assert metrics.bootstrap.n_resamples == 200 and metrics.extra["chance_auroc"] == 0.5
    assert metrics["nodule"].auroc == pytest.approx(roc_auc_score(labels[:, 1], p[:, 1]))


def test_random_embeddings_score_chance_with_an_interval_covering_it():
    images, positive, negative, labels, patients = _aligned(strength=0.0, seed=3)
    p = zeroshot_probabilities(images, positive, negative, normalize=True)
    metrics = score_zeroshot(p, labels, patients, FINDINGS, n_resamples=300, seed=0)
    assert abs(metrics.macro_auroc - 0.5) < 0.06
    low, high = metrics.macro_auroc_ci
    assert low < 0.5 < high


def test_a_one_class_finding_is_skipped_and_counted_never_half():
    images, positive, negative, labels, patients = _aligned()
    labels[:, 2] = 0.0
    p = zeroshot_probabilities(images, positive, negative, normalize=False)
    metrics = score_zeroshot(p, labels, patients, FINDINGS, n_resamples=50)
    edema = metrics["edema"]
    assert edema.skipped == ONE_CLASS and edema.auroc is None and edema.auroc_ci is None
    assert (metrics.n_evaluable, metrics.n_classes) == (2, 3)
    assert metrics.macro_auroc == pytest.approx(np.mean([metrics["effusion"].auroc, metrics["nodule"].auroc]))


def test_uncertain_and_unknown_labels_are_ignored():
    images, positive, negative, labels, patients = _aligned(strength=0.7)
    p = zeroshot_probabilities(images, positive, negative, normalize=False)
    uncertain = np.zeros(len(labels), dtype=bool)
    uncertain[::5] = True
    labels[uncertain, 0] = -1.0
    labels[1::7, 0] = np.nan
    p[uncertain, 0] = 1.0  # scored as a negative, these would pull the AUROC down
    keep = np.isin(labels[:, 0], [0, 1])
    metrics = score_zeroshot(p, labels, patients, FINDINGS, n_resamples=0)
    assert metrics["effusion"].n == keep.sum()
    assert metrics["effusion"].auroc == pytest.approx(roc_auc_score(labels[keep, 0], p[keep, 0]))
    assert metrics.bootstrap is None  # no resamples asked for: point values only


def test_shapes_are_checked():
    with pytest.raises(BadInputError, match="dimensions"):
        zeroshot_probabilities(np.ones((3, 4)), np.ones((2, 5)), np.ones((2, 5)), normalize=True)
    with pytest.raises(BadInputError, match="differ"):
        zeroshot_probabilities(np.ones((3, 4)), np.ones((2, 4)), np.ones((3, 4)), normalize=True)
    with pytest.raises(BadInputError, match="finding names"):
        score_zeroshot(np.full((4, 2), 0.5), np.zeros((4, 2)), None, ["a"])


def test_results_file_keeps_prompts_metrics_and_references(tmp_path):
    images, positive, negative, labels, patients = _aligned()
    labels[:, 2] = 0.0
    p = zeroshot_probabilities(images, positive, negative, normalize=False)
    metrics = score_zeroshot(p, labels, patients, FINDINGS, n_resamples=50)
    prompts = prompt_pairs(FINDINGS, "p4")
    path = write_zeroshot_results(tmp_path / "zs", metrics, prompt_family="p4", prompts=prompts,
                                  readout="prompts", model_ref="runs/a", data_ref={"manifest_hash": "h"},
                                  extra={"normalize": False})  # fmt: skip
    data = json.loads(path.read_text())
    assert data["schema"] == "greenfm.zeroshot/1" and data["prompt_family"] == "p4"
    assert data["prompts"][1] == {"finding": "nodule", "positive": "nodule is present.",
                                  "negative": "nodule is not present."}  # fmt: skip
    assert data["test"]["n_evaluable"] == 2 and data["test"]["macro_auroc"] == pytest.approx(metrics.macro_auroc)
    assert data["chance_auroc"] == 0.5 and data["model"] == "runs/a" and data["extra"] == {"normalize": False}
    table = pd.read_csv(tmp_path / "zs" / "zeroshot_findings.csv")
    assert list(table["name"]) == FINDINGS and table.loc[2, "skipped"] == ONE_CLASS
    assert table.loc[0, "positive_prompt"] == "effusion is present."
    with pytest.raises(BadInputError, match="prompt pairs"):
        write_zeroshot_results(tmp_path / "x", metrics, prompt_family="p4", prompts=prompts[:2])
    with pytest.raises(ConfigError, match="readout"):
        write_zeroshot_results(tmp_path / "x", metrics, prompt_family=None, prompts=None, readout="logits")
