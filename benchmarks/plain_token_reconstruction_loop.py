"""The plain-PyTorch baseline for ``bench_train_step.py``: a token-reconstruction step, nothing else.

Only torch (and the timm model handed in). It is written out by hand from the
objective in METHODS section 2 rather than calling greenfm, so the benchmark
compares greenfm's method + engine against the shortest loop a PyTorch user would
write for the same step:

    y  = teacher.forward_features(x)                     # frozen copy, no grad
    xn = x + noise_std * x.std((2, 3)) * randn           # last sample clean
    t  = where(mask, 0, student.patch_embed(xn))         # r_b ~ U(0, mask_max)
    h  = student.norm(student.blocks(student.norm_pre(student._pos_embed(t))))
    loss = mse(h + gamma * projector(h), y)
    loss.backward(); clip_grad_norm_(0.1); AdamW.step(); zero_grad()

Data: one preloaded float32 tensor, sliced into batches (no DataLoader); no
logging, no checkpoint, no schedule (greenfm's TR recipe changes the lr per
epoch, and every step here lies in one epoch).
"""

from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F
from torch import nn


class PlainTokenReconstruction(nn.Module):
    """A student ViT (timm), its frozen copy as the teacher, and the residual projector."""

    def __init__(self, student: nn.Module, *, noise_std: float = 0.2, mask_max: float = 1 / 3,
                 layerscale_init: float = 1e-5):
        super().__init__()
        self.student = student
        self.teacher = copy.deepcopy(student).eval().requires_grad_(False)
        width = student.num_features
        self.projector = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU(),
                                       nn.Linear(width, width))
        self.gamma = nn.Parameter(torch.full((width,), layerscale_init))
        self.noise_std, self.mask_max = noise_std, mask_max

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.teacher.forward_features(x)
        noisy = x + self.noise_std * x.std(dim=(2, 3), keepdim=True) * torch.randn_like(x)
        noisy[-1] = x[-1]
        s = self.student
        tokens = s.patch_embed(noisy)
        ratio = torch.rand(tokens.shape[0]) * self.mask_max
        mask = torch.rand(tokens.shape[:-1]) < ratio[:, None]
        mask[-1] = False
        tokens = torch.where(mask[..., None], torch.zeros((), dtype=tokens.dtype), tokens)
        h = s.norm(s.blocks(s.norm_pre(s.patch_drop(s._pos_embed(tokens)))))
        return F.mse_loss(h + self.gamma * self.projector(h), target)


def adamw(module: nn.Module, *, lr: float, betas: tuple[float, float], weight_decay: float,
          eps: float = 1e-8) -> torch.optim.AdamW:
    """torch's AdamW; decay on trainable tensors of 2+ dims, none on 1-D ones (as the TR recipe)."""
    trainable = [p for p in module.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trainable if p.ndim >= 2], "weight_decay": weight_decay},
              {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def train(model: PlainTokenReconstruction, optimizer: torch.optim.Optimizer, images: torch.Tensor, *,
          batch_size: int, steps: int, grad_clip: float | None) -> list[tuple[float, float]]:
    """Run ``steps`` optimiser steps over ``images`` (wrapping around).

    Returns ``(perf_counter(), process_time())`` read after each step.
    """
    model.train()
    model.teacher.eval()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    ends, start = [], 0
    for _ in range(steps):
        if start + batch_size > len(images):
            start = 0
        x = images[start : start + batch_size]
        start += batch_size
        loss = model.loss(x)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ends.append((time.perf_counter(), time.process_time()))
    return ends
