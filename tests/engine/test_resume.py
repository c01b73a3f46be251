"""A run killed with SIGKILL and resumed ends exactly where the uninterrupted run ends."""

from __future__ import annotations

import os
import signal
import time

import pytest
import torch
from engine_toy import ToyData, ToyMethod, forked, one_thread, toy_config, weights

from greenfm.engine import fit, load_checkpoint, read_metrics

N = 48  # 6 steps per epoch at batch 8


def _config():
    # augmentation and the method's noise draw from python, numpy and torch RNGs: resume must restore them
    return toy_config(epochs=3, batch_size=8, checkpoint_every_steps=4, checkpoint_every_epochs=None, keep_periodic=1)


def _train(run_dir, sleep):
    fit(ToyMethod(), ToyData(N, sleep=sleep), _config(), run_dir)


def test_sigkill_mid_run_then_resume_equals_the_uninterrupted_run(tmp_path):
    killed = tmp_path / "killed"
    child = forked(_train, killed, 0.01)  # ~0.1 s per step
    deadline = time.monotonic() + 60
    while not (killed / "checkpoints" / "step-8.ckpt").exists():
        assert child.is_alive() and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.005)
    time.sleep(0.15)  # part-way into the next steps, possibly inside a checkpoint write
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    assert child.exitcode == -signal.SIGKILL
    stopped_at = load_checkpoint(killed / "checkpoints" / "last.ckpt")["progress"]["step"]
    assert 8 <= stopped_at < 18 and not (killed / "compute.json").exists()

    resumed, reference = ToyMethod(), ToyMethod()
    with one_thread():  # the same kernels as in the killed process, so results agree to the bit
        result = fit(resumed, ToyData(N), _config(), killed, resume=True)
        fit(reference, ToyData(N), _config(), tmp_path / "reference")

    assert result.steps == 18 and result.samples_seen == 3 * N
    for key, value in weights(reference).items():
        assert torch.allclose(resumed.state_dict()[key], value, rtol=0, atol=0), key
    rows, expected = read_metrics(killed, "step"), read_metrics(tmp_path / "reference", "step")
    assert [r["step"] for r in rows] == list(range(1, 19))  # rows after the checkpoint were rewritten once
    assert [r["loss"] for r in rows] == [r["loss"] for r in expected]
    assert [r["epoch"] for r in read_metrics(killed, "epoch")] == [0, 1, 2]
    assert read_metrics(killed, "epoch")[-1]["loss"] == read_metrics(tmp_path / "reference", "epoch")[-1]["loss"]


def test_a_crash_while_writing_a_later_checkpoint_keeps_the_finished_run(tmp_path, monkeypatch):
    fit(ToyMethod(), ToyData(32), toy_config(epochs=2), tmp_path)
    last = tmp_path / "checkpoints" / "last.ckpt"
    finished = last.read_bytes()

    def torn_save(obj, handle):
        handle.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(OSError, match="disk full"):  # extend the run; its first checkpoint write dies
        fit(ToyMethod(), ToyData(32), toy_config(epochs=3), tmp_path, resume=True)
    monkeypatch.undo()
    assert last.read_bytes() == finished
    assert not [p for p in last.parent.iterdir() if p.name.startswith(".")]
    assert load_checkpoint(last)["progress"]["step"] == 4
    assert fit(ToyMethod(), ToyData(32), toy_config(epochs=3), tmp_path, resume=True).steps == 6
