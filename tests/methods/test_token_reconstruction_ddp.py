"""One clean sample per optimiser step, the global batch's last, as in the official single-GPU run:
also with gradient accumulation and on 2 gloo processes (forked with torchrun's environment)."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import traceback

import torch
from torch import nn
from torch.utils.data import Dataset

from greenfm.engine import TrainConfig, fit
from greenfm.methods.token_reconstruction import TokenReconstruction
from greenfm.models import create_encoder

WORLD = 2


class Indexed(Dataset):
    def __init__(self, n: int = 20):
        g = torch.Generator().manual_seed(0)
        low = torch.rand(n, 3, 4, 4, generator=g)
        self.x = (nn.functional.interpolate(low, size=32, mode="bilinear") - 0.5) / 0.5

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.x[i], "index": i}


class Recording(TokenReconstruction):
    """Records, per micro-batch, the dataset indices whose images came through the noise untouched."""

    def __init__(self, **config):
        torch.manual_seed(0)
        super().__init__(create_encoder("vit_tiny_test"), config)
        self.clean: list[list[int]] = []

    def training_step(self, batch):
        self._indices = [int(i) for i in batch["index"]]
        return super().training_step(batch)

    def corrupt_images(self, x):
        noisy = super().corrupt_images(x)
        if torch.is_grad_enabled():  # not the engine's FLOP count (no_grad)
            self.clean.append([self._indices[k] for k in range(len(x)) if torch.equal(noisy[k], x[k])])
        return noisy


def _config(**overrides) -> TrainConfig:
    base = dict(epochs=2, batch_size=8, lr=1e-3, warmup=0, t_initial=None, num_workers=0, track_energy=False,
                progress_bar=False, accelerator="cpu", precision="32", checkpoint_every_epochs=None, seed=3,
                grad_clip=0.1)  # fmt: skip
    return TrainConfig(**{**base, **overrides})


def _run(run_dir, accumulate: int, **config) -> Recording:
    method = Recording(**config)
    fit(method, Indexed(), _config(accumulate=accumulate), run_dir)
    return method


def _rank(rank: int, port: int, run_dir) -> None:
    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD), LOCAL_WORLD_SIZE=str(WORLD), GROUP_RANK="0", TORCHELASTIC_RUN_ID="greenfm-test",
    )  # fmt: skip
    try:
        # with the official clipping emulated too: its clip norm must keep the replicas identical
        method = _run(run_dir, accumulate=2, reproduce_official=True)
        (run_dir / f"clean-{rank}.json").write_text(json.dumps(method.clean))
        torch.save({k: v.detach().clone() for k, v in method.state_dict().items()}, run_dir / f"state-{rank}.pt")
    except BaseException:
        (run_dir / f"error-{rank}.txt").write_text(traceback.format_exc())
        raise


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _per_step(micro_batches: list[list[int]], per_step: int) -> list[list[int]]:
    return [sum(micro_batches[i : i + per_step], []) for i in range(0, len(micro_batches), per_step)]


def test_one_clean_sample_per_step_the_global_batch_last_on_two_gloo_processes(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = _run(tmp_path / "single", accumulate=1).clean  # 20 images, batch 8: steps of 8, 8, 4 per epoch
        accumulated = _run(tmp_path / "accumulated", accumulate=2).clean
    finally:
        torch.set_num_threads(threads)
    assert [len(c) for c in single] == [1] * 6
    expected = [c[0] for c in single]  # the last sample of each global batch
    assert _per_step(accumulated, 2)[:2] == [[expected[0]], [expected[1]]]
    assert [c for c in accumulated if c] == [[e] for e in expected]  # one per step, the same images

    run_dir = tmp_path / "ddp"
    run_dir.mkdir()
    port = _free_port()
    context = multiprocessing.get_context("fork")
    ranks = [context.Process(target=_rank, args=(rank, port, run_dir), daemon=True) for rank in range(WORLD)]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(timeout=120)
    errors = [p.read_text() for p in run_dir.glob("error-*.txt")]
    assert not errors and all(p.exitcode == 0 for p in ranks), errors
    clean = [json.loads((run_dir / f"clean-{rank}.json").read_text()) for rank in range(WORLD)]
    # per rank and epoch: steps of 2 + 2 micro-batches of 2 images, then a short step of 1
    bounds = [(0, 2), (2, 4), (4, 5), (5, 7), (7, 9), (9, 10)]
    assert all(len(rank_batches) == 10 for rank_batches in clean)
    found = [[i for rank_batches in clean for batch in rank_batches[a:b] for i in batch] for a, b in bounds]
    assert found == [[e] for e in expected]  # exactly one clean sample per step, the single run's
    assert all(not any(batch) for batch in clean[0])  # rank 0 never holds it
    states = [torch.load(run_dir / f"state-{rank}.pt") for rank in range(WORLD)]
    assert states[0]["official.token_grad"].abs().sum() > 0 and int(states[0]["official.step_count"]) == 6
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_micro_batch_scope_keeps_one_clean_sample_per_micro_batch(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        clean = _run(tmp_path / "run", accumulate=2, clean_scope="micro-batch").clean
    finally:
        torch.set_num_threads(threads)
    assert all(len(c) == 1 for c in clean) and len(clean) == 2 * (2 + 2 + 1)
