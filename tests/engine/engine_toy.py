"""A tiny regression method and data set for engine tests; also a script (for kill and torchrun tests).

python engine_toy.py RUN_DIR '{"epochs": 2, ...}' [--resume] [--sleep S] [--n N] [--no-augment]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

DIM = 8


class ToyData(Dataset):
    """y = x . w + small noise; with ``augment``, draws from python, numpy and torch RNGs per item."""

    def __init__(self, n: int = 64, *, seed: int = 0, augment: bool = True, sleep: float = 0.0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, DIM, generator=g)
        self.y = self.x @ torch.linspace(-1, 1, DIM) + 0.01 * torch.randn(n, generator=g)
        self.augment, self.sleep = augment, sleep

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        if self.sleep:
            time.sleep(self.sleep)
        x = self.x[i].clone()
        if self.augment:
            x = x * (1 + 0.01 * random.random()) + 0.01 * float(np.random.randn()) + 0.01 * torch.randn(DIM)
        return {"image": x, "target": self.y[i], "index": i}


class ToyMethod(nn.Module):
    """An MLP regressor with a frozen, eval-mode "teacher" (dropout) that must stay in eval mode."""

    def __init__(self, seed: int = 0, *, noise: float = 0.01):
        super().__init__()
        self.noise = noise
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(DIM, 32), nn.LayerNorm(32), nn.GELU(), nn.Linear(32, 1))
        self.teacher = nn.Sequential(nn.Dropout(0.5), nn.Linear(DIM, 1))
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        self.teacher_modes: list[bool] = []
        self.seen_dtypes: list[tuple[torch.dtype, torch.dtype]] = []  # (input, linear output)

    def train(self, mode: bool = True) -> ToyMethod:
        super().train(mode)
        self.teacher.eval()
        return self

    def training_step(self, batch: dict) -> dict:
        self.teacher_modes.append(self.teacher.training)
        x = batch["image"]
        if self.noise:
            x = x + self.noise * torch.randn_like(x)  # the method's own randomness
        pred = self.net(x).squeeze(-1)
        self.seen_dtypes.append((batch["image"].dtype, self.net[0](x).dtype))
        loss = ((pred.float() - batch["target"].float()) ** 2).mean()
        return {"loss": loss, "pred_mean": pred.detach().float().mean()}

    def on_after_optimizer_step(self, step: int) -> None:
        self.updates += 1

    def export_model(self) -> nn.Module:
        return self.net


def toy_config(**overrides):
    """A fast, quiet, single-process fp32 CPU config; ``overrides`` win."""
    from greenfm.engine import TrainConfig

    base = dict(
        epochs=2, batch_size=16, lr=1e-2, weight_decay=0.0, num_workers=0, log_every_steps=1,
        track_energy=False, progress_bar=False, accelerator="cpu", precision="32",
    )  # fmt: skip
    return TrainConfig(**{**base, **overrides})


def weights(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("config")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--no-augment", action="store_true")
    args = parser.parse_args(argv)
    from greenfm.engine import TrainConfig, fit

    config = TrainConfig(**json.loads(args.config))
    data = ToyData(args.n, sleep=args.sleep, augment=not args.no_augment)
    result = fit(ToyMethod(), data, config, args.run_dir, resume=args.resume)
    if result.compute:
        Path(args.run_dir, "done").write_text(str(result.steps))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()


def forked(target, *args):
    """Start ``target(*args)`` in a forked process (inherits imports: fast) with one CPU thread."""
    import multiprocessing

    def run():
        torch.set_num_threads(1)
        target(*args)

    process = multiprocessing.get_context("fork").Process(target=run, daemon=True)
    process.start()
    return process


class one_thread:
    """Run torch on one CPU thread, like the forked processes (CPU kernels' sums depend on threads)."""

    def __enter__(self):
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.threads)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
