"""Synthetic joint embeddings for curation tests: clusters around known unit directions."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def directions(k: int = 6, dim: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(k, dim, generator=g), dim=1)


def balanced_batch(size: int, k: int = 6, dim: int = 32, noise: float = 0.05, seed: int = 1):
    """``size`` rows, cluster ``i % k``, each a small perturbation of its direction (distinct distances)."""
    g = torch.Generator().manual_seed(seed)
    protos = directions(k, dim)
    cluster = torch.arange(size) % k
    c = F.normalize(protos[cluster] + noise * torch.randn(size, dim, generator=g), dim=1)
    return c, protos, cluster


def long_tailed(sizes: list[int], dim: int = 32, noise: float = 0.08, seed: int = 2):
    """Rows in clusters of the given sizes, shuffled; returns (c, cluster)."""
    g = torch.Generator().manual_seed(seed)
    protos = directions(len(sizes), dim)
    cluster = torch.cat([torch.full((n,), i) for i, n in enumerate(sizes)])
    cluster = cluster[torch.randperm(len(cluster), generator=g)]
    c = F.normalize(protos[cluster] + noise * torch.randn(len(cluster), dim, generator=g), dim=1)
    return c, cluster
