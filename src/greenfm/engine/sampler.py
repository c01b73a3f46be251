"""Data order: one seeded global order per epoch, sharded over ranks, resumable mid-epoch.

The epoch's order is a permutation drawn from ``(seed, epoch)`` (or, when a
``source`` sampler such as a ``WeightedRandomSampler`` is given, its draws made with
a generator seeded from ``(seed, epoch)``). Rank ``r`` of ``W`` takes positions
``r, r + W, r + 2W, ...``, as torch's ``DistributedSampler`` does, so optimiser
step ``s`` always sees the same global batch ``order[s*B:(s+1)*B]`` whatever the
number of devices and accumulation steps. Written by hand because torch's
``DistributedSampler`` cannot start mid-epoch or wrap another sampler.

A curated run changes the epoch's length: :meth:`EpochShardSampler.set_subset` restricts the
order to a fixed set of dataset indices (a permutation of the subset per epoch, same seeding),
and :meth:`EpochShardSampler.steps_per_epoch` follows the current length.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


def derived_seed(*parts: int) -> int:
    """A 63-bit seed from integers (numpy's SeedSequence mixes them properly)."""
    return int(np.random.SeedSequence([int(p) % (1 << 63) for p in parts]).generate_state(2, np.uint64)[0] >> 1)


class EpochShardSampler(Sampler[int]):
    """Indices for one rank in one epoch; call :meth:`set_epoch` before each epoch.

    Args:
        length: dataset length (ignored when ``source`` is given: ``len(source)``).
        global_batch: images per optimiser step over all ranks.
        rank, world_size: this process and the number of processes.
        seed: seeds the order together with the epoch.
        drop_last: drop the last incomplete global batch.
        source: optional sampler whose draws define the epoch's order.

    Without ``drop_last``, a last global batch of a single image is still dropped: BatchNorm
    cannot train on one sample (a 3-D ResNet's last stage fails on it), and the image left
    out changes from epoch to epoch with the shuffled order.
    """

    def __init__(
        self,
        length: int,
        *,
        global_batch: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        drop_last: bool = False,
        source: Sampler | None = None,
    ):
        self.source = source
        self.full_length = len(source) if source is not None else length
        self.length = self.full_length
        self.subset: list[int] | None = None
        self.global_batch = global_batch
        self.rank, self.world_size = rank, world_size
        self.seed, self.drop_last = seed, drop_last
        self.epoch, self.skip = 0, 0
        if self.length == 0:
            raise ValueError("the training set is empty")
        if drop_last and self.length < global_batch:
            raise ValueError(f"drop_last with {self.length} images and a global batch of {global_batch}: no step")

    def set_subset(self, indices: list[int] | None) -> None:
        """Draw each epoch from these dataset indices only (``None``: the whole set again)."""
        if indices is None:
            self.subset, self.length = None, self.full_length
            return
        if self.source is not None:
            raise ValueError("a curated subset cannot be combined with a custom sampler")
        subset = sorted({int(i) for i in indices})
        if not subset:
            raise ValueError("the curated subset is empty")
        if subset[0] < 0 or subset[-1] >= self.full_length:
            raise ValueError(f"the curated subset holds index {subset[-1] if subset[-1] >= 0 else subset[0]}, "
                             f"outside a training set of {self.full_length}")  # fmt: skip
        if self.drop_last and len(subset) < self.global_batch:
            raise ValueError(f"drop_last with a subset of {len(subset)} and a global batch of {self.global_batch}: "
                             "no step")  # fmt: skip
        self.subset, self.length = subset, len(subset)

    def steps_per_epoch(self) -> int:
        """Optimiser steps in one epoch."""
        if self.drop_last:
            return self.length // self.global_batch
        return math.ceil(self.used() / self.global_batch)

    def used(self) -> int:
        """Images drawn in one epoch: all, less an incomplete last batch (``drop_last``) or a lone last image."""
        if self.drop_last:
            return self.length // self.global_batch * self.global_batch
        if self.length > 1 and self.length % self.global_batch == 1:
            return self.length - 1
        return self.length

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Select the epoch's order; ``skip`` drops this rank's first ``skip`` indices (resume)."""
        self.epoch, self.skip = epoch, skip

    def global_order(self) -> list[int]:
        """The epoch's order over all ranks, before sharding."""
        generator = torch.Generator().manual_seed(derived_seed(self.seed, self.epoch))
        if self.subset is not None:
            order = [self.subset[i] for i in torch.randperm(self.length, generator=generator).tolist()]
        elif self.source is None:
            order = torch.randperm(self.length, generator=generator).tolist()
        else:
            if hasattr(self.source, "generator"):
                self.source.generator = generator
            order = [int(i) for i in self.source]
        order = order[: self.used()]
        # every rank gets as many indices: wrap around, as DistributedSampler pads
        target = math.ceil(len(order) / self.world_size) * self.world_size
        return (order * math.ceil(target / len(order)))[:target]

    def __iter__(self) -> Iterator[int]:
        shard = self.global_order()[self.rank :: self.world_size]
        return iter(shard[self.skip :])

    def __len__(self) -> int:
        return max(0, math.ceil(self.used() / self.world_size) - self.skip)
