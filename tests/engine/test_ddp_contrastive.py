"""A loss whose negatives span the global batch, on 2 gloo processes: the same loss and gradients
as one process with the whole batch (the all-gather keeps the local slice's gradient, summed
over ranks), the same training run through ``fit``, exact resume, and accumulation refused."""

from __future__ import annotations

import os
import traceback

import pytest
import torch
import torch.distributed as dist
from engine_toy import DIM, ToyData, forked, free_port, one_thread, toy_config, weights
from torch import nn

from greenfm.engine import fit, read_metrics
from greenfm.engine.distributed import RunContext
from greenfm.errors import ConfigError
from greenfm.methods.base import Recipe
from greenfm.methods.contrastive_loss import unicl_loss

WORLD = 2


class ToyContrastive(Recipe):
    """Two linear towers on two views of each item; UniCL loss with shared ids (index mod 5)."""

    name = "toy-contrastive"
    per_sample_loss = False
    batch_keys = ("image", "target")

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.image = nn.Linear(DIM, 16)
        self.text = nn.Linear(DIM, 16)
        self.view = torch.randn(DIM, DIM)
        self.logit_scale = nn.Parameter(torch.tensor(2.0))

    def training_step(self, batch):
        x = batch["image"]
        u = nn.functional.normalize(self.image(x), dim=-1)
        v = nn.functional.normalize(self.text(x @ self.view + batch["target"][:, None]), dim=-1)
        ids = torch.as_tensor(batch["index"]) % 5
        loss = unicl_loss(self.context.all_gather(u), self.context.all_gather(v), self.context.all_gather(ids),
                          self.logit_scale)  # fmt: skip
        return {"loss": loss}

    def export_model(self):
        return self.image


def _env(rank: int, port: int) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD), LOCAL_WORLD_SIZE=str(WORLD), GROUP_RANK="0", TORCHELASTIC_RUN_ID="greenfm-test",
    )  # fmt: skip


def _batch(rows):
    data = ToyData(64, augment=False)
    items = [data[i] for i in rows]
    return {"image": torch.stack([i["image"] for i in items]), "target": torch.stack([i["target"] for i in items]),
            "index": torch.tensor([i["index"] for i in items])}  # fmt: skip


def _gradients(method: Recipe, batch) -> tuple[float, dict[str, torch.Tensor]]:
    method.zero_grad()
    loss = method.training_step(batch)["loss"]
    loss.backward()
    return float(loss.detach()), {k: p.grad.detach().clone() for k, p in method.named_parameters()}


def _grad_rank(rank, port, out):
    _env(rank, port)
    try:
        dist.init_process_group("gloo", rank=rank, world_size=WORLD)
        method = ToyContrastive()
        method.setup(RunContext(rank=rank, world_size=WORLD))
        rows = list(range(rank * 6, rank * 6 + 6)) if rank == 0 else list(range(6, 10))  # uneven: 6 + 4
        loss, grads = _gradients(method, _batch(rows))
        for g in grads.values():  # what DDP does: the mean over ranks
            dist.all_reduce(g)
            g /= WORLD
        torch.save({"loss": loss, "grads": grads}, out / f"grads-{rank}.pt")
        dist.destroy_process_group()
    except BaseException:
        (out / f"error-{rank}.txt").write_text(traceback.format_exc())
        raise


def _run_ranks(target, out, *args):
    port = free_port()
    ranks = [forked(target, rank, port, out, *args) for rank in range(WORLD)]
    for process in ranks:
        process.join(timeout=120)
    errors = [p.read_text() for p in out.glob("error-*.txt")]
    assert not errors and all(p.exitcode == 0 for p in ranks), errors


def test_gathered_loss_and_gradients_equal_one_process_with_the_whole_batch(tmp_path):
    with one_thread():
        loss, grads = _gradients(ToyContrastive(), _batch(range(10)))
    _run_ranks(_grad_rank, tmp_path)
    for rank in range(WORLD):
        saved = torch.load(tmp_path / f"grads-{rank}.pt")
        assert saved["loss"] == pytest.approx(loss, abs=1e-5)
        for name, grad in grads.items():
            torch.testing.assert_close(saved["grads"][name], grad, rtol=1e-5, atol=1e-5)
    # the check has teeth: without the summed gradient, DDP's mean would halve it
    assert any(g.abs().max() > 1e-3 for g in grads.values())


def _fit_rank(rank, port, out, overrides, resume):
    _env(rank, port)
    try:
        method = ToyContrastive()
        fit(method, ToyData(64, augment=False), toy_config(**overrides), out, resume=resume)
        torch.save(weights(method), out / f"weights-{rank}.pt")
    except BaseException:
        (out / f"error-{rank}.txt").write_text(traceback.format_exc())
        raise


def test_contrastive_training_on_two_processes_matches_one_and_resumes_exactly(tmp_path):
    config = dict(epochs=2, batch_size=16, t_initial=8, checkpoint_every_epochs=None)
    single = ToyContrastive()
    with one_thread():
        fit(single, ToyData(64, augment=False), toy_config(**config), tmp_path / "single")
    run = tmp_path / "ddp"
    run.mkdir()
    _run_ranks(_fit_rank, run, {**config, "max_steps": 3}, False)
    _run_ranks(_fit_rank, run, config, True)
    ddp_loss = [r["loss"] for r in read_metrics(run, "step")]
    single_loss = [r["loss"] for r in read_metrics(tmp_path / "single", "step")]
    assert len(ddp_loss) == len(single_loss) == 8
    torch.testing.assert_close(torch.tensor(ddp_loss), torch.tensor(single_loss), rtol=1e-5, atol=1e-6)
    rank0 = torch.load(run / "weights-0.pt")
    for key, value in weights(single).items():
        torch.testing.assert_close(rank0[key], value, rtol=1e-4, atol=1e-5)


def test_accumulation_is_refused_for_a_loss_that_does_not_split_per_sample(tmp_path):
    with pytest.raises(ConfigError, match="does not split per sample"):
        fit(ToyContrastive(), ToyData(32, augment=False), toy_config(batch_size=16, accumulate=2), tmp_path / "run")
