"""SIGTERM / SIGINT stop a real training process after the current step with a checkpoint; resume is exact."""

from __future__ import annotations

import signal
import time

import pytest
import torch
from engine_toy import ToyData, ToyMethod, one_thread, toy_config, weights
from toy_process import alive, children_of, start, wait_for_steps

from greenfm.engine import fit, load_checkpoint, read_metrics
from greenfm.engine.lock import LOCK_NAME

N = 48  # 6 steps per epoch at batch 8, 18 in all
SETTINGS = dict(epochs=3, batch_size=8, checkpoint_every_epochs=None)  # no periodic checkpoint: only the signal's


def _subprocess_config(workers: int) -> dict:
    return toy_config(**SETTINGS, num_workers=workers).to_dict()


def _reference(tmp_path, augment: bool) -> dict[str, torch.Tensor]:
    method = ToyMethod()
    with one_thread():
        fit(method, ToyData(N, augment=augment), toy_config(**SETTINGS), tmp_path / f"reference-{augment}")
    return weights(method)


@pytest.mark.slow  # a real process: its start-up (imports) dominates
@pytest.mark.parametrize(
    "signum, workers, augment",
    [(signal.SIGTERM, 2, False), (signal.SIGINT, 0, True)],
    ids=["sigterm-with-workers", "sigint"],
)
def test_a_signal_mid_epoch_checkpoints_then_resume_equals_the_uninterrupted_run(tmp_path, signum, workers, augment):
    run = tmp_path / "run"
    # 0.05 s per item: 0.4 s per step, so the signal lands seconds before the run's end even on a busy machine
    process = start(run, _subprocess_config(workers), sleep=0.05, n=N, augment=augment)
    wait_for_steps(process, run, 7)  # inside epoch 1
    workers_before = children_of(process.pid)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 128 + signum, stderr  # 143 (SIGTERM) or 130 (SIGINT)
    stopped = load_checkpoint(run / "checkpoints" / "last.ckpt")["progress"]
    assert 7 <= stopped["step"] < 18 and stopped["steps_in_epoch"] > 0  # mid-epoch, the step was finished
    lines = [line for line in stderr.splitlines() if "resume with" in line]
    assert len(lines) == 1 and str(run / "checkpoints" / "last.ckpt") in lines[0], stderr
    assert f"at step {stopped['step']}" in lines[0] and "Traceback" not in stderr
    assert not (run / LOCK_NAME).exists()
    assert len(workers_before) == workers
    time.sleep(0.2)
    assert not [pid for pid in workers_before if alive(pid)], "DataLoader workers outlived the run"

    resumed = ToyMethod()
    with one_thread():  # the subprocess ran on one thread too: the same kernels, the same bits
        result = fit(resumed, ToyData(N, augment=augment), toy_config(**SETTINGS), run, resume=True)
    assert result.steps == 18 and result.samples_seen == 3 * N
    expected = _reference(tmp_path, augment)
    for key, value in weights(resumed).items():
        assert torch.equal(value, expected[key]), key
    assert [r["step"] for r in read_metrics(run, "step")] == list(range(1, 19))
