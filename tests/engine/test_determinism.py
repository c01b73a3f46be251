"""Identical CPU runs agree to the bit, and so does a run SIGKILLed at random points and resumed each time."""

from __future__ import annotations

import random
import signal
import time

import pytest
import torch
from engine_toy import ToyData, ToyMethod, one_thread, toy_config, weights
from toy_process import start, wait_for_steps

from greenfm.engine import fit, load_checkpoint

N = 48  # 6 steps per epoch at batch 8, 18 in all
SETTINGS = dict(epochs=3, batch_size=8, checkpoint_every_steps=2, checkpoint_every_epochs=None)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, torch.Tensor]:
    """The uninterrupted run, in this process on one thread (the subprocesses run on one thread too)."""
    method = ToyMethod()
    with one_thread():
        fit(method, ToyData(N), toy_config(**SETTINGS), tmp_path_factory.mktemp("reference"))
    return weights(method)


def _sessions(run) -> int:
    """Training sessions begun in ``run`` (each logs one "training ..." line after rewinding metrics.jsonl)."""
    log = run / "train.log"
    return log.read_text().count("training ToyMethod") if log.is_file() else 0


def _final_weights(run) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.ckpt")["model"]


def _assert_bitwise_equal(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(got[key], value), f"{key}: max diff {(got[key].double() - value.double()).abs().max()}"


@pytest.mark.slow  # real processes: start-up (imports) dominates
def test_a_run_in_another_process_equals_the_reference_bit_for_bit(tmp_path, reference):
    process = start(tmp_path, toy_config(**SETTINGS).to_dict(), n=N)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    _assert_bitwise_equal(_final_weights(tmp_path), reference)


@pytest.mark.slow
def test_sigkill_at_three_random_points_then_resume_equals_the_uninterrupted_run(tmp_path, reference):
    seed = random.randrange(1 << 30)
    draw = random.Random(seed)
    kill_steps = sorted(draw.sample(range(2, 15), 3))  # >= 3 steps (>= 1.2 s) left: the kill lands on a busy machine too
    print(f"seed {seed}: SIGKILL after steps {kill_steps}")
    stopped_at = []
    for step in kill_steps:
        resume = (tmp_path / "checkpoints" / "last.ckpt").is_file()
        sessions = _sessions(tmp_path)
        process = start(tmp_path, toy_config(**SETTINGS).to_dict(), sleep=0.05, n=N, resume=resume)
        while _sessions(tmp_path) == sessions and process.poll() is None:  # until metrics.jsonl is rewound
            time.sleep(0.01)
        wait_for_steps(process, tmp_path, step)
        time.sleep(draw.uniform(0.0, 0.4))  # anywhere in the next step, a checkpoint write included
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
        assert process.returncode == -signal.SIGKILL, f"the run ended before step {step} could be killed"
        stopped_at.append(load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["progress"]["step"])
    assert stopped_at == sorted(stopped_at) and stopped_at[-1] < 18

    process = start(tmp_path, toy_config(**SETTINGS).to_dict(), n=N, resume=True)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert "took over a stale lock" in stderr  # every SIGKILL left its lock behind
    _assert_bitwise_equal(_final_weights(tmp_path), reference)
