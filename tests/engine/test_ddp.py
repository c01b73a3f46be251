"""DDP on CPU (2 gloo processes): the same losses and weights as one process with the same global batch.

The two ranks are forked from the test process with torchrun's environment variables, so
Fabric takes them for a torchrun launch (the path multi-GPU and multi-node runs use).
"""

from __future__ import annotations

import os
import traceback

import torch
from engine_toy import ToyData, ToyMethod, forked, free_port, one_thread, toy_config, weights

from greenfm.engine import fit, load_checkpoint, read_metrics

WORLD = 2


def _config(**overrides):
    # fp32; no augmentation or method noise, whose draws differ per process by design
    base = dict(epochs=2, batch_size=16, accumulate=2, t_initial=8, checkpoint_every_epochs=None)
    return toy_config(**{**base, **overrides})


def _rank(rank, port, run_dir, overrides, resume):
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD), LOCAL_WORLD_SIZE=str(WORLD), GROUP_RANK="0", TORCHELASTIC_RUN_ID="greenfm-test",
    )  # fmt: skip
    try:
        method = ToyMethod(noise=0.0)
        fit(method, ToyData(64, augment=False), _config(**overrides), run_dir, resume=resume)
        torch.save(weights(method), run_dir / f"weights-{rank}.pt")
    except BaseException:
        (run_dir / f"error-{rank}.txt").write_text(traceback.format_exc())
        raise


def _ddp(run_dir, resume=False, **overrides):
    run_dir.mkdir(exist_ok=True)
    port = free_port()
    ranks = [forked(_rank, rank, port, run_dir, overrides, resume) for rank in range(WORLD)]
    for process in ranks:
        process.join(timeout=60)
    errors = [p.read_text() for p in run_dir.glob("error-*.txt")]
    assert not errors and all(p.exitcode == 0 for p in ranks), errors
    return [torch.load(run_dir / f"weights-{rank}.pt") for rank in range(WORLD)]


def test_two_gloo_processes_match_one_process_and_resume_mid_epoch(tmp_path):
    single = ToyMethod(noise=0.0)
    with one_thread():
        fit(single, ToyData(64, augment=False), _config(), tmp_path / "single")

    # 8 steps; stop after 3 (mid-epoch: 4 per epoch), then resume on the same 2 processes
    _ddp(tmp_path / "ddp", max_steps=3)
    assert load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.ckpt")["progress"]["steps_in_epoch"] == 3
    rank0, rank1 = _ddp(tmp_path / "ddp", resume=True)

    ddp_rows, single_rows = read_metrics(tmp_path / "ddp", "step"), read_metrics(tmp_path / "single", "step")
    assert [r["step"] for r in ddp_rows] == [r["step"] for r in single_rows] == list(range(1, 9))
    ddp_loss = torch.tensor([r["loss"] for r in ddp_rows])
    torch.testing.assert_close(ddp_loss, torch.tensor([r["loss"] for r in single_rows]), rtol=1e-4, atol=1e-7)
    for key, value in weights(single).items():
        torch.testing.assert_close(rank0[key], value, rtol=1e-4, atol=1e-6)
        assert torch.equal(rank0[key], rank1[key])  # DDP keeps the replicas identical
    ledger = (tmp_path / "ddp" / "compute.json").read_text()
    assert '"device_count": 2' in ledger and '"per_device_batch": 4' in ledger and '"sessions": 2' in ledger
