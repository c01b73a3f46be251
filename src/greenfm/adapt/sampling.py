"""Class-balanced sampling: every distinct label combination drawn equally often.

Each image's weight is 1 / (number of images with the same label row), where a
row's unknown (NaN) and uncertain (-1) entries count as values of their own. A
``WeightedRandomSampler`` over these weights draws each combination (e.g. "no
finding", "effusion only", "effusion + oedema") with equal probability.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler

from greenfm.errors import BadInputError


def balanced_sample_weights(labels: np.ndarray) -> np.ndarray:
    """(N,) float64 weights, 1 / count of each row's label combination; they sum to the number of combinations."""
    y = np.asarray(labels, dtype=float)
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2 or len(y) == 0:
        raise BadInputError(f"balanced sampling needs (N, K) labels with N > 0, got shape {y.shape}")
    coded = np.where(np.isnan(y), -2.0, y)  # NaN != NaN, so give unknown a value of its own
    _, inverse, counts = np.unique(coded, axis=0, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse.reshape(-1)]


def balanced_sampler(labels: np.ndarray, *, num_samples: int | None = None, seed: int = 0) -> WeightedRandomSampler:
    """A ``WeightedRandomSampler`` (with replacement) over ``balanced_sample_weights``; one epoch = N draws."""
    weights = balanced_sample_weights(labels)
    generator = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(
        torch.as_tensor(weights, dtype=torch.double),
        num_samples=num_samples or len(weights),
        replacement=True,
        generator=generator,
    )
