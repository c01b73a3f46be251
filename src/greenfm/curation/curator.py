"""``PrototypeCurator``: the state of a curation epoch (METHODS 4.2), usable inside or outside a recipe.

It holds K unit-norm prototypes (a buffer: no gradient, no weight decay), the ids kept so far and,
once the curation epoch ends, the fixed subset. All of it is in ``state_dict()`` (the prototypes as
buffers, the ids as extra state), so a run killed mid-curation resumes with the same selection.

Under DDP every rank holds the gathered global batch; rank 0 decides (selection, prototype
update, k-means) and broadcasts the decision, so every rank trains on the same rows. Rows are
ordered by their dataset id before any decision and the farthest-point sampler's random start is
seeded from the batch's ids, so the selection does not depend on the number of processes.

Usage outside a recipe::

    curator = PrototypeCurator(dim=1024)
    curator.initialize(warmup_embeddings, warmup_ids)        # k-means, 20 iterations, seed 42
    for c, ids in batches:                                  # c: normalised joint embeddings
        keep = curator.select(c, ids)                       # (N,) bool, staged
        ...train on rows keep...
        curator.update()                                    # commit the kept ids; Sinkhorn-Knopp EMA on them
    subset = curator.finish()                               # sorted ids kept at least once
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from greenfm.curation.prototypes import kmeans_prototypes, sinkhorn_update
from greenfm.curation.selection import THIN_MODES, Selection, select_batch
from greenfm.errors import ConfigError


@contextmanager
def _one_thread():
    """Selection and update are many small ops: one intra-op thread is faster than waking a pool (on a busy
    machine each parallel op can cost a scheduler time slice)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _OneProcess:
    rank, world_size = 0, 1

    @staticmethod
    def all_gather(tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    @staticmethod
    def broadcast(obj: object, src: int = 0) -> object:
        return obj


class PrototypeCurator(nn.Module):
    """Prototype curation; see the module docstring."""

    def __init__(self, dim: int, *, clusters: int = 6, max_per_cluster: int = 10, thinning: str = "fps",
                 seed: int = 42, kmeans_iterations: int = 20, momentum: float = 0.9, epsilon: float = 0.5,
                 sinkhorn_iterations: int = 3, kmeans_backend: str = "auto"):  # fmt: skip
        super().__init__()
        if clusters < 1 or max_per_cluster < 1:
            raise ConfigError(f"curation needs clusters >= 1 and max_per_cluster >= 1, got {clusters}, {max_per_cluster}")
        if thinning not in THIN_MODES:
            raise ConfigError(f"unknown thinning '{thinning}'; valid: {', '.join(THIN_MODES)}")
        self.clusters, self.max_per_cluster, self.thinning = clusters, max_per_cluster, thinning
        self.seed, self.kmeans_iterations, self.kmeans_backend = seed, kmeans_iterations, kmeans_backend
        self.momentum, self.epsilon, self.sinkhorn_iterations = momentum, epsilon, sinkhorn_iterations
        self.register_buffer("prototypes", torch.zeros(clusters, dim))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.context: Any = _OneProcess()
        self.kept: set[int] = set()
        self.subset: list[int] | None = None
        self.members = np.zeros(clusters, dtype=np.int64)  # rows seen / kept per cluster over the epoch
        self.kept_per_cluster = np.zeros(clusters, dtype=np.int64)
        self.batches = 0
        self.backend = ""
        self._pending: torch.Tensor | None = None

    def setup(self, context: Any) -> None:
        """The run's process group (``RunContext``): rank, ``all_gather``, ``broadcast``."""
        self.context = context

    # --- state kept across a resume ------------------------------------------------------

    def get_extra_state(self) -> dict[str, Any]:
        return {"kept": torch.tensor(sorted(self.kept), dtype=torch.long),
                "subset": torch.tensor(self.subset if self.subset is not None else [], dtype=torch.long),
                "finished": self.subset is not None, "members": torch.from_numpy(self.members.copy()),
                "kept_per_cluster": torch.from_numpy(self.kept_per_cluster.copy()), "batches": self.batches}  # fmt: skip

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.kept = {int(i) for i in state["kept"].tolist()}
        self.subset = [int(i) for i in state["subset"].tolist()] if state["finished"] else None
        self.members = state["members"].numpy().astype(np.int64)
        self.kept_per_cluster = state["kept_per_cluster"].numpy().astype(np.int64)
        self.batches = int(state["batches"])

    # --- the three steps ---------------------------------------------------------------------

    def initialize(self, c: torch.Tensor, ids: torch.Tensor, *, limit: int | None = None) -> None:
        """k-means on this rank's warm-up embeddings gathered over ranks (rank 0 decides, by id order)."""
        c_all = self.context.all_gather(F.normalize(c.detach().float(), dim=1))
        ids_all = self.context.all_gather(torch.as_tensor(ids, dtype=torch.long, device=c.device))
        found = None
        if self.context.rank == 0:
            order = _unique_order(ids_all.cpu())[:limit]
            centroids, backend = kmeans_prototypes(c_all.cpu()[order], self.clusters, iterations=self.kmeans_iterations,
                                                   seed=self.seed, backend=self.kmeans_backend)  # fmt: skip
            found = (centroids, backend)
        centroids, self.backend = self.context.broadcast(found, 0)
        self.prototypes.copy_(centroids.to(self.prototypes.device))
        self.initialized.fill_(True)

    def select(self, c: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """(N,) bool mask of the rows of a gathered global batch to train on; rows are those of ``c``.

        The decision is staged: :meth:`update` (after the optimiser step) records the kept ids and moves
        the prototypes, so a step that is not taken (a skipped non-finite batch, a FLOP count) leaves
        no trace; a later ``select`` replaces a staged decision."""
        if not bool(self.initialized):
            raise ConfigError("PrototypeCurator.select before initialize(): the prototypes are not set")
        ids = torch.as_tensor(ids, dtype=torch.long).cpu()
        decision = None
        if self.context.rank == 0:
            with _one_thread():
                decision = self._decide(c, ids)
        keep, cluster = self.context.broadcast(decision, 0)
        self._pending = (ids[keep], cluster, keep, F.normalize(c.detach().float(), dim=1)[keep.to(c.device)])
        return keep.to(c.device)

    def _decide(self, c: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rank 0's decision: rows in id order, bands, thinning; (keep, cluster) in the batch's row order."""
        order = torch.argsort(ids, stable=True)
        generator = torch.Generator().manual_seed(_seed_of(self.seed, ids[order]))
        chosen = select_batch(F.normalize(c.detach().float().cpu()[order], dim=1), self.prototypes.cpu(),
                              max_per_cluster=self.max_per_cluster, mode=self.thinning, generator=generator)  # fmt: skip
        keep, cluster = torch.zeros_like(chosen.kept), torch.zeros_like(chosen.cluster)
        keep[order], cluster[order] = chosen.kept, chosen.cluster
        return keep, cluster

    def describe(self, c: torch.Tensor) -> Selection:
        """The full decision (bands, clusters) on ``c`` with the current prototypes, recording nothing."""
        generator = torch.Generator().manual_seed(self.seed)
        return select_batch(F.normalize(c.detach().float().cpu(), dim=1), self.prototypes.cpu(),
                            max_per_cluster=self.max_per_cluster, mode=self.thinning, generator=generator)  # fmt: skip

    @torch.no_grad()
    def update(self) -> None:
        """Record the last ``select``'s kept ids and move the prototypes towards them (Sinkhorn-Knopp, EMA);
        call after the optimiser step."""
        if self._pending is None:
            return
        kept_ids, cluster, keep, kept_c = self._pending
        self.kept.update(int(i) for i in kept_ids.tolist())
        self.members += np.bincount(cluster.numpy(), minlength=self.clusters)
        self.kept_per_cluster += np.bincount(cluster[keep].numpy(), minlength=self.clusters)
        self.batches += 1
        new = None
        if self.context.rank == 0:
            with _one_thread():
                new = sinkhorn_update(self.prototypes.cpu(), kept_c.cpu(), momentum=self.momentum,
                                      epsilon=self.epsilon, iterations=self.sinkhorn_iterations)  # fmt: skip
        self.prototypes.copy_(self.context.broadcast(new, 0).to(self.prototypes.device))
        self._pending = None

    def finish(self) -> list[int]:
        """End the curation epoch: the subset is the sorted union of kept ids, fixed from now on."""
        if self.subset is None:
            if not self.kept:
                raise ConfigError("curation kept no sample: the subset would be empty")
            self.subset = sorted(self.kept)
        return self.subset

    def summary(self) -> dict[str, Any]:
        """Per-cluster members and kept rows over the curation epoch, and the subset's size."""
        ratio = [float(k / m) if m else None for k, m in zip(self.kept_per_cluster, self.members)]
        return {"clusters": self.clusters, "max_per_cluster": self.max_per_cluster, "thinning": self.thinning,
                "batches": self.batches, "members_per_cluster": self.members.tolist(),
                "kept_per_cluster": self.kept_per_cluster.tolist(), "keep_ratio_per_cluster": ratio,
                "rows_kept": int(self.kept_per_cluster.sum()), "rows_seen": int(self.members.sum()),
                "distinct_kept": len(self.kept), "subset_size": len(self.subset) if self.subset is not None else None,
                "kmeans_backend": self.backend}  # fmt: skip


def _unique_order(ids: torch.Tensor) -> torch.Tensor:
    """Positions of the distinct ids, in increasing id order (padding duplicates dropped)."""
    order = torch.argsort(ids, stable=True)
    sorted_ids = ids[order]
    first = torch.ones_like(sorted_ids, dtype=torch.bool)
    first[1:] = sorted_ids[1:] != sorted_ids[:-1]
    return order[first]


def _seed_of(seed: int, ids: torch.Tensor) -> int:
    """A seed from the batch's ids: the same batch draws the same start whatever the process count."""
    head = [int(i) % (1 << 62) for i in ids[:8].tolist()]
    state = np.random.SeedSequence([seed, len(ids), int(ids.sum()) % (1 << 62), *head]).generate_state(1, np.uint64)
    return int(state[0] >> 1)
