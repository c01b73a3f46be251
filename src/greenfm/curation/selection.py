"""Per-batch selection (METHODS 4.2 step 2): bands around each sample's nearest prototype.

For the joint embeddings ``c`` of one global batch and unit-norm prototypes ``p``:
``d_i = min_k ||c_i - p_k||`` and cluster = argmin. Within each cluster, with ``q95`` and ``q85``
of its distances (``torch.quantile``, linear interpolation):

- **outliers** ``d > q95`` are dropped;
- **support** ``q85 < d <= q95`` is kept whole;
- **central** ``d <= q85`` is thinned to ``max_per_cluster`` rows: farthest-point sampling
  (random start, then greedily the row farthest from those chosen), or ``density`` (the rows
  with the largest mean distance to their 5 nearest central neighbours), or ``random``.

Small clusters: with fewer than about 10 members the support band is empty (q85 and q95 fall
between the same two sorted distances) and a single member is central, so it is kept. A batch
smaller than K simply leaves clusters empty. The three bands are disjoint and cover the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from greenfm.errors import ConfigError

ThinMode = Literal["fps", "density", "random"]
THIN_MODES = ("fps", "density", "random")


@dataclass
class Selection:
    """The decision on one batch; every mask is (N,) bool, in the batch's row order."""

    cluster: torch.Tensor  # (N,) long, nearest prototype
    distance: torch.Tensor  # (N,) float, distance to it
    outlier: torch.Tensor
    support: torch.Tensor
    central: torch.Tensor
    kept: torch.Tensor  # support | thinned central

    @property
    def keep_ratio(self) -> float:
        return float(self.kept.float().mean()) if self.kept.numel() else 0.0

    def cluster_counts(self, clusters: int) -> dict[str, list[int]]:
        """Members and kept rows per cluster."""
        members = torch.bincount(self.cluster, minlength=clusters)
        kept = torch.bincount(self.cluster[self.kept], minlength=clusters)
        return {"members": members.tolist(), "kept": kept.tolist()}


def _distances(points: torch.Tensor, to: torch.Tensor) -> torch.Tensor:
    """(N, M) Euclidean distances in numpy: the matrices here are small, and torch's intra-op thread pool
    costs more than the arithmetic (milliseconds per op on a busy machine)."""
    a, b = points.numpy(), to.numpy()
    return torch.from_numpy(np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)))


def nearest_prototype(c: torch.Tensor, prototypes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(distance, index) of each row's nearest prototype (Euclidean)."""
    distance, cluster = _distances(c.float(), prototypes.float()).min(dim=1)
    return distance, cluster


def farthest_point_sampling(points: torch.Tensor, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices of ``count`` rows: a random first row, then each time the row farthest from those chosen."""
    n = points.shape[0]
    if count >= n:
        return torch.arange(n)
    first = int(torch.randint(n, (1,), generator=generator))
    chosen = [first]
    x = points.numpy()  # numpy: single-threaded small ops (see _distances)
    closest = ((x - x[first]) ** 2).sum(1)  # squared: same order, no square roots
    for _ in range(count - 1):
        nxt = int(np.argmax(closest))
        chosen.append(nxt)
        closest = np.minimum(closest, ((x - x[nxt]) ** 2).sum(1))
    return torch.tensor(chosen, dtype=torch.long)


def sparsest_points(points: torch.Tensor, count: int, neighbours: int = 5) -> torch.Tensor:
    """Indices of the ``count`` rows with the largest mean distance to their nearest neighbours."""
    n = points.shape[0]
    if count >= n:
        return torch.arange(n)
    pairwise = _distances(points, points)
    pairwise.fill_diagonal_(float("inf"))
    k = min(neighbours, n - 1)
    spread = pairwise.topk(k, dim=1, largest=False).values.mean(dim=1)
    return spread.topk(count).indices


def thin(points: torch.Tensor, count: int, mode: ThinMode, generator: torch.Generator | None = None) -> torch.Tensor:
    """``count`` row indices of ``points`` by ``mode`` (all rows when there are no more)."""
    if mode == "fps":
        return farthest_point_sampling(points, count, generator)
    if mode == "density":
        return sparsest_points(points, count)
    if mode == "random":
        n = points.shape[0]
        return torch.randperm(n, generator=generator)[: min(count, n)]
    raise ConfigError(f"unknown thinning mode '{mode}'; valid: {', '.join(THIN_MODES)}")


def select_batch(
    c: torch.Tensor,
    prototypes: torch.Tensor,
    *,
    max_per_cluster: int,
    mode: ThinMode = "fps",
    generator: torch.Generator | None = None,
    upper: float = 0.95,
    lower: float = 0.85,
) -> Selection:
    """Band each row of ``c`` (N, D) around its nearest prototype and keep support + thinned central."""
    if c.ndim != 2 or prototypes.ndim != 2 or c.shape[1] != prototypes.shape[1]:
        raise ConfigError(f"embeddings {tuple(c.shape)} and prototypes {tuple(prototypes.shape)} do not match")
    if max_per_cluster < 1:
        raise ConfigError(f"max_per_cluster must be at least 1, got {max_per_cluster}")
    c = c.detach().float().cpu()
    distance, cluster = nearest_prototype(c, prototypes.detach().cpu())
    n = c.shape[0]
    outlier, support, central, kept = (torch.zeros(n, dtype=torch.bool) for _ in range(4))
    for k in torch.unique(cluster).tolist():
        rows = torch.nonzero(cluster == k).squeeze(1)
        d = distance[rows]
        q_hi, q_lo = torch.quantile(d, upper), torch.quantile(d, lower)
        outlier[rows[d > q_hi]] = True
        support[rows[(d > q_lo) & (d <= q_hi)]] = True
        inner = rows[d <= q_lo]
        central[inner] = True
        kept[inner[thin(c[inner], max_per_cluster, mode, generator)]] = True
    kept |= support
    return Selection(cluster=cluster, distance=distance, outlier=outlier, support=support, central=central, kept=kept)
