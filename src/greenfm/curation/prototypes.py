"""Prototype initialisation (k-means) and update (Sinkhorn-Knopp, hard assignment, EMA): METHODS 4.2 steps 1, 3."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from greenfm.errors import ConfigError


def kmeans_prototypes(c: torch.Tensor, clusters: int, *, iterations: int = 20, seed: int = 42,
                      backend: str = "auto") -> tuple[torch.Tensor, str]:  # fmt: skip
    """``clusters`` unit-norm centroids of the rows of ``c`` and the backend used.

    faiss's k-means when installed (``backend='auto'`` or ``'faiss'``), else scikit-learn's
    (one k-means++ start, ``max_iter=iterations``, ``random_state=seed``).
    """
    x = np.ascontiguousarray(c.detach().float().cpu().numpy(), dtype=np.float32)
    if x.shape[0] < clusters:
        raise ConfigError(f"prototype initialisation needs at least {clusters} embeddings (K), got {x.shape[0]}; "
                          "use a larger warm-up or fewer prototypes")  # fmt: skip
    if not np.isfinite(x).all():
        raise ConfigError("prototype initialisation: the warm-up embeddings hold NaN or Inf")
    centroids, used = None, "scikit-learn"
    if backend in ("auto", "faiss"):
        try:
            import faiss  # optional extra: greenfm[faiss]
        except ImportError:
            if backend == "faiss":
                raise ConfigError("kmeans backend 'faiss' asked for but faiss is not installed (pip install "
                                  "'greenfm[faiss]')") from None  # fmt: skip
        else:
            km = faiss.Kmeans(x.shape[1], clusters, niter=iterations, seed=seed, verbose=False)
            km.train(x)
            centroids, used = km.centroids, f"faiss {faiss.__version__}"
    if centroids is None:
        from sklearn.cluster import KMeans

        km = KMeans(n_clusters=clusters, n_init=1, max_iter=iterations, random_state=seed).fit(x)
        centroids = km.cluster_centers_
    return F.normalize(torch.as_tensor(np.asarray(centroids), dtype=torch.float32), dim=1), used


def sinkhorn(scores: torch.Tensor, *, epsilon: float = 0.5, iterations: int = 3) -> torch.Tensor:
    """Balanced soft assignment (N, K) of ``scores`` (N, K): Sinkhorn-Knopp on ``exp(S / eps)^T``,
    normalised to total 1, then ``iterations`` x [rows (prototypes) -> 1/K, columns (samples) -> 1/N]."""
    q = torch.exp((scores - scores.max()) / epsilon).t()  # the shift cancels in the normalisation
    q = q / q.sum()
    k, n = q.shape
    for _ in range(iterations):
        q = q / q.sum(dim=1, keepdim=True) / k
        q = q / q.sum(dim=0, keepdim=True) / n
    return q.t()


def sinkhorn_update(prototypes: torch.Tensor, c: torch.Tensor, *, momentum: float = 0.9, epsilon: float = 0.5,
                    iterations: int = 3) -> torch.Tensor:  # fmt: skip
    """New unit-norm prototypes from the kept rows ``c`` (N, D): hard Sinkhorn assignment, cluster means,
    ``p <- momentum p + (1 - momentum) mean``, renormalised. A prototype with no row keeps its direction."""
    if c.shape[0] == 0:
        return prototypes.clone()
    c = c.detach().float().to(prototypes.device)
    p = F.normalize(prototypes.float(), dim=1)
    assignment = sinkhorn(c @ p.t(), epsilon=epsilon, iterations=iterations).argmax(dim=1)
    weights = F.one_hot(assignment, p.shape[0]).float()  # (N, K)
    means = weights.t() @ c / (weights.sum(dim=0)[:, None] + 1e-8)
    return F.normalize(momentum * p + (1 - momentum) * means, dim=1)
