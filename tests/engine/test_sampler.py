"""Data order: seeded per epoch, the same global batches on any number of ranks, resumable."""

from __future__ import annotations

import torch
from torch.utils.data import WeightedRandomSampler

from greenfm.engine.sampler import EpochShardSampler


def _global_batches(n, *, batch, world, micro, epoch=0, **kw):
    """Reassemble the global batches from every rank's micro-batches."""
    shards = []
    for rank in range(world):
        s = EpochShardSampler(n, global_batch=batch, rank=rank, world_size=world, **kw)
        s.set_epoch(epoch)
        idx = list(s)
        shards.append([idx[i : i + micro] for i in range(0, len(idx), micro)])
    per_step = batch // (world * micro)
    steps = []
    for first in range(0, len(shards[0]), per_step):
        steps.append(sorted(i for shard in shards for mb in shard[first : first + per_step] for i in mb))
    return steps


def test_global_batches_do_not_depend_on_ranks_or_accumulation():
    one = _global_batches(40, batch=8, world=1, micro=8, seed=3)
    assert one == _global_batches(40, batch=8, world=2, micro=2, seed=3)
    assert one == _global_batches(40, batch=8, world=4, micro=1, seed=3)
    assert sorted(i for step in one for i in step) == list(range(40))
    assert one != _global_batches(40, batch=8, world=1, micro=8, seed=3, epoch=1)
    assert one != _global_batches(40, batch=8, world=1, micro=8, seed=4)


def test_last_partial_batch_and_drop_last():
    s = EpochShardSampler(21, global_batch=8, rank=1, world_size=2)
    assert s.steps_per_epoch() == 3 and len(s) == len(list(s)) == 11  # 21 padded to 22
    d = EpochShardSampler(21, global_batch=8, rank=1, world_size=2, drop_last=True)
    assert d.steps_per_epoch() == 2 and len(d) == len(list(d)) == 8


def test_skip_resumes_mid_epoch():
    s = EpochShardSampler(30, global_batch=6, rank=0, world_size=2, seed=1)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, skip=6)
    assert list(s) == full[6:] and len(s) == len(full) - 6


def test_source_sampler_is_reseeded_per_epoch():
    weights = torch.tensor([0.1, 0.1, 5.0, 0.1, 0.1, 0.1])
    source = WeightedRandomSampler(weights, num_samples=12, replacement=True)
    s = EpochShardSampler(0, global_batch=4, seed=0, source=source)
    s.set_epoch(0)
    first = list(s)
    assert len(first) == 12 and first.count(2) > 4
    s.set_epoch(1)
    s.set_epoch(0)
    assert list(s) == first


def test_a_lone_last_image_is_left_out_a_different_one_each_epoch():
    # a last batch of one would fail in BatchNorm (a 3-D ResNet's last stage: 1 value per channel)
    sampler = EpochShardSampler(81, global_batch=8, seed=0)
    assert sampler.steps_per_epoch() == 10 and len(sampler) == 80
    left_out = set()
    for epoch in range(4):
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert len(order) == 80 and len(set(order)) == 80
        left_out |= set(range(81)) - set(order)
    assert len(left_out) > 1
    assert len(EpochShardSampler(82, global_batch=8)) == 82  # a last batch of two is kept
    assert len(EpochShardSampler(1, global_batch=8)) == 1  # a one-image set still trains
