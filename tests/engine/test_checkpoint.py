"""Atomic checkpoint files and weights-only loading."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from greenfm.engine.checkpoint import (
    atomic_write,
    clean_stale_temporaries,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    snapshot,
)
from greenfm.engine.rng import capture_rng, restore_rng
from greenfm.errors import BadInputError


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "last.ckpt"
    save_checkpoint({"model": {"w": torch.ones(3)}}, path)
    before = path.read_bytes()

    def crash(handle):
        handle.write(b"half a checkpoint")
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of torch.save

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, crash)
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]  # no temporary left behind
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(3))


def test_stale_temporaries_are_removed_and_never_read(tmp_path):
    path = save_checkpoint({"model": {}}, tmp_path / "last.ckpt")
    stale = tmp_path / ".last.ckpt.tmp-4242"  # what a SIGKILL during a write leaves
    stale.write_bytes(b"\x00" * 10)
    assert clean_stale_temporaries(tmp_path) == [stale]
    assert load_checkpoint(path)["format"].startswith("greenfm")


def test_snapshots_are_pruned_to_keep(tmp_path):
    last = tmp_path / "last.ckpt"
    for step in (2, 4, 6):
        save_checkpoint({"step": step}, last)
        snapshot(last, step, keep=2)
    assert sorted(p.name for p in tmp_path.glob("step-*.ckpt")) == ["step-4.ckpt", "step-6.ckpt"]
    assert load_checkpoint(tmp_path / "step-4.ckpt")["step"] == 4  # not changed by later writes of last


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    import random

    import numpy as np

    torch.manual_seed(1)
    save_checkpoint({"rng": capture_rng()}, tmp_path / "c.ckpt")
    expected = (random.random(), np.random.rand(), torch.rand(1))
    restore_rng(load_checkpoint(tmp_path / "c.ckpt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected


def _net():
    return nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))


@pytest.mark.parametrize("kind", ["safetensors", "state_dict", "engine"])
def test_load_weights_reads_every_format(tmp_path, kind):
    source, target = _net(), _net()
    if kind == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file(source.state_dict(), str(path))
    elif kind == "state_dict":
        path = tmp_path / "w.pth"
        torch.save({"module." + k: v for k, v in source.state_dict().items()}, path)  # a DDP-saved dict
    else:
        path = save_checkpoint({"model": source.state_dict(), "optimizer": {}}, tmp_path / "last.ckpt")
    report = load_weights(target, path)
    assert report.exact
    assert all(
        torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values(), strict=True)
    )


def test_load_weights_strict_and_lenient(tmp_path):
    path = tmp_path / "w.pth"
    state = _net().state_dict()
    state.pop("1.bias")
    state["extra"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(BadInputError, match=r"1 missing \(1.bias\), 1 unexpected \(extra\)"):
        load_weights(_net(), path)
    report = load_weights(_net(), path, strict=False)
    assert report.missing == ["1.bias"] and report.unexpected == ["extra"]
    torch.save({"0.weight": torch.zeros(5, 5)}, path)
    with pytest.raises(BadInputError, match="'0.weight' is"):
        load_weights(_net(), path, strict=False)


def test_load_weights_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(1), "obj": nn.Linear(1, 1)}, path)
    with pytest.raises(BadInputError, match="cannot read weights"):
        load_weights(_net(), path)
