"""Zero-shot classification from image and prompt embeddings, scored like any other evaluation.

Each finding c has a positive and a negative prompt (``greenfm.evaluate.prompts``).
An image's probability of c is the softmax over its two similarities,

    p_c = softmax([s . t_c+, s . t_c-])[0] = sigmoid(s . t_c+ - s . t_c-),

computed as the sigmoid of the difference, which cannot overflow. ``normalize=True``
L2-normalises the image and both prompts first (cosine similarity, CheXficient);
``normalize=False`` uses the raw latents (GreenRFM). Scoring reuses the evaluation
layer unchanged: -1 / NaN labels ignored, one-class findings skipped and counted,
patient-cluster bootstrap CIs (``greenfm.evaluate.bootstrap``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.special import expit

from greenfm.errors import BadInputError
from greenfm.evaluate.bootstrap import bootstrap_metrics
from greenfm.evaluate.metrics import Metrics, compute_metrics

CHANCE_AUROC = 0.5


def as_matrix(values: Any, name: str) -> np.ndarray:
    """A finite 2-D float64 array from a numpy array, a list or a (CPU or GPU) torch tensor."""
    if hasattr(values, "detach"):  # torch.Tensor, without importing torch here
        values = values.detach().float().cpu().numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2:
        raise BadInputError(f"{name} must be 2-D (rows, dimensions), got shape {array.shape}")
    if not np.isfinite(array).all():
        raise BadInputError(f"{name} holds {int((~np.isfinite(array)).sum())} NaN or infinite value(s)")
    return array


def l2_normalize(array: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit length (an all-zero row stays zero, as ``torch.nn.functional.normalize``)."""
    return array / np.maximum(np.linalg.norm(array, axis=1, keepdims=True), eps)


def zeroshot_probabilities(image_emb: Any, positive_emb: Any, negative_emb: Any, *, normalize: bool) -> np.ndarray:
    """(N, K) P(finding) from image embeddings (N, D) and positive / negative prompt embeddings (K, D)."""
    image = as_matrix(image_emb, "image embeddings")
    positive = as_matrix(positive_emb, "positive prompt embeddings")
    negative = as_matrix(negative_emb, "negative prompt embeddings")
    if positive.shape != negative.shape:
        raise BadInputError(f"positive prompts {positive.shape} and negative prompts {negative.shape} differ")
    if image.shape[1] != positive.shape[1]:
        raise BadInputError(f"image embeddings have {image.shape[1]} dimensions, prompts {positive.shape[1]}")
    if normalize:
        image, positive, negative = l2_normalize(image), l2_normalize(positive), l2_normalize(negative)
    return expit(image @ (positive - negative).T)


def score_zeroshot(
    probabilities: Any,
    labels: Any,
    patient_ids: Sequence[Any] | None,
    findings: Sequence[str],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
) -> Metrics:
    """Per-finding AUROC and AUPRC, their macro means and patient-bootstrap 95% CIs.

    ``labels`` is (N, K) with 1 / 0 / -1 (uncertain) / NaN (unknown); -1 and NaN are
    ignored per finding, and a finding left with one class is skipped and counted
    (``n_evaluable`` of ``n_classes``), never scored 0.5. ``patient_ids=None`` draws
    images instead of patients; ``n_resamples=0`` gives point values only.
    """
    scores = as_matrix(probabilities, "zero-shot probabilities")
    y = np.asarray(labels, dtype=float)
    if y.ndim == 1 and scores.shape[1] == 1:
        y = y[:, None]
    if y.shape != scores.shape:
        raise BadInputError(f"labels {y.shape} and probabilities {scores.shape} must have one (N, K) shape")
    if len(findings) != scores.shape[1]:
        raise BadInputError(f"{len(findings)} finding names for {scores.shape[1]} probability columns")
    if n_resamples <= 0:
        metrics = compute_metrics(y, scores, task="multilabel", names=list(findings))
    else:
        metrics = bootstrap_metrics(
            y, scores, patient_ids, task="multilabel", names=list(findings), n_resamples=n_resamples, seed=seed
        )
    metrics.extra["chance_auroc"] = CHANCE_AUROC
    return metrics
