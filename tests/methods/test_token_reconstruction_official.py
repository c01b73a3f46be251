"""Token reconstruction against the official step and loop, rewritten here from METHODS 2.2-2.3 alone.

- a peer check: the objective reimplemented from its published description gives greenfm's
  loss and gradients (same weights, batch and random draws) to 1e-6;
- the official clipping bug: the literal official loop (loss scaled by a GradScaler factor,
  optimiser gradients unscaled, ``clip_grad_norm_`` over every parameter, the mask token
  included but never zeroed) against greenfm's ``reproduce_official`` emulation, and the
  clip coefficient with and without it.
"""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from torch import nn

from greenfm.engine import TrainConfig, fit, read_metrics
from greenfm.errors import ConfigError
from greenfm.methods.official_clipping import OfficialClipping
from greenfm.methods.token_reconstruction import TokenReconstruction
from greenfm.models import create_encoder

SCALE = 65536.0  # the CUDA GradScaler's initial scale


def tiny(seed: int = 0, **config) -> TokenReconstruction:
    torch.manual_seed(seed)
    method = TokenReconstruction(create_encoder("vit_tiny_test"), config)
    with torch.no_grad():  # a student away from its teacher and a non-trivial projector scale
        for param in method.student.parameters():
            param.add_(0.02 * torch.randn_like(param))
        method.gamma.copy_(0.1 * torch.rand_like(method.gamma))
    return method


def images(n: int = 6, size: int = 32, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    return (nn.functional.interpolate(low, size=size, mode="bilinear") - 0.5) / 0.5


class OfficialModel(nn.Module):
    """The official step as METHODS 2.2 describes it, on copies of greenfm's networks."""

    def __init__(self, method: TokenReconstruction):
        super().__init__()
        self.student = copy.deepcopy(method.student)
        self.teacher = copy.deepcopy(method.teacher)
        self.projector = copy.deepcopy(method.projector)
        self.gamma = nn.Parameter(method.gamma.detach().clone())
        self.mask_token = nn.Parameter(torch.zeros(1, 1, method.encoder.embed_dim))  # never given to the optimiser

    def step_loss(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            y = self.teacher.forward_features(x)  # clean, after the final norm
        xn = x + 0.2 * x.std(dim=(2, 3), keepdim=True) * torch.randn_like(x)  # per image, per channel
        xn[-1] = x[-1]  # the last sample stays clean
        s = self.student
        t = s.patch_embed(xn)
        b, n = t.shape[:2]
        r = torch.rand(b) * (1 / 3)  # r_b ~ U(0, 1/3)
        mask = torch.rand(b, n) < r[:, None]  # Bernoulli(r_b) per patch
        mask[-1] = False
        t = torch.where(mask[..., None], self.mask_token, t)  # before the position embeddings
        h = s.norm(s.blocks(s.norm_pre(s._pos_embed(t))))
        h = h + self.gamma * self.projector(h)
        return ((h - y) ** 2).mean()  # over all B x tokens x width values

    def optimised(self) -> list[nn.Parameter]:
        return [*self.student.parameters(), *self.projector.parameters(), self.gamma]


def greenfm_grads(method: TokenReconstruction) -> dict[str, torch.Tensor]:
    named = {f"student.{k}": p for k, p in method.student.named_parameters()}
    named |= {f"projector.{k}": p for k, p in method.projector.named_parameters()} | {"gamma": method.gamma}
    return {k: p.grad for k, p in named.items()}


def official_grads(model: OfficialModel) -> dict[str, torch.Tensor]:
    named = {f"student.{k}": p for k, p in model.student.named_parameters()}
    named |= {f"projector.{k}": p for k, p in model.projector.named_parameters()} | {"gamma": model.gamma}
    return {k: p.grad for k, p in named.items()}


def test_peer_check_loss_and_gradients_equal_the_described_official_step():
    method = tiny()
    official = OfficialModel(method)
    x = images()
    torch.manual_seed(7)
    loss = method.training_step({"image": x})["loss"]
    loss.backward()
    torch.manual_seed(7)  # the same draws, in the described order: noise, ratios, per-patch uniforms
    reference = official.step_loss(x)
    reference.backward()
    assert loss.item() > 1e-3  # noise and masking make a real loss
    torch.testing.assert_close(loss, reference, rtol=0, atol=1e-6)
    ours, theirs = greenfm_grads(method), official_grads(official)
    assert ours.keys() == theirs.keys() and all(g is not None for g in ours.values())
    for name, grad in ours.items():
        torch.testing.assert_close(grad, theirs[name], rtol=0, atol=1e-6, msg=name)
    assert official.mask_token.grad.abs().sum() > 0  # the official token does receive a gradient


def _official_loop(model: OfficialModel, batches, lr: float = 1e-3):
    """METHODS 2.3's loop: scaled backward, unscale the optimiser's grads, clip model.parameters()."""
    optimizer = torch.optim.AdamW(model.optimised(), lr=lr, betas=(0.9, 0.99), weight_decay=1e-4)
    norms = []
    for seed, x in batches:
        torch.manual_seed(seed)
        (model.step_loss(x) * SCALE).backward()
        for param in model.optimised():  # scaler.unscale_(optimizer): optimiser parameters only
            param.grad.div_(SCALE)
        params = [p for p in model.parameters() if p.requires_grad]  # the mask token included
        norms.append(float(torch.nn.utils.clip_grad_norm_(params, 0.1)))
        optimizer.step()
        optimizer.zero_grad()  # the mask token's gradient is never cleared
    return norms


def _greenfm_loop(method: TokenReconstruction, batches, lr: float = 1e-3):
    optimizer = torch.optim.AdamW(method.optimizer_groups(1e-4), lr=lr, betas=(0.9, 0.99))
    optimised = [p for group in optimizer.param_groups for p in group["params"]]

    def clip(max_norm: float) -> torch.Tensor:  # the engine's clipping: optimised parameters only
        return torch.nn.utils.clip_grad_norm_(optimised, max_norm)

    norms = []
    for step, (seed, x) in enumerate(batches):
        torch.manual_seed(seed)
        method.on_micro_batch(0, 1)
        method.training_step({"image": x})["loss"].backward()
        norms.append(float(method.clip_gradients(0.1, clip)))
        optimizer.step()
        optimizer.zero_grad()
        method.on_after_optimizer_step(step)
    return norms


def test_reproduce_official_emulates_the_official_clipping_and_collapses_the_clip_coefficient(caplog):
    batches = [(11 + i, images(seed=i)) for i in range(4)]
    with caplog.at_level(logging.WARNING):
        emulated = tiny(reproduce_official=True)
    assert "clipping bug" in caplog.text and emulated.flags["official_clipping_bug"]
    official = OfficialModel(emulated)
    correct = tiny()

    official_norms = _official_loop(official, batches)
    emulated_norms = _greenfm_loop(emulated, batches)
    correct_norms = _greenfm_loop(correct, batches)

    # the emulation is the official loop: same clip norms and same weights after 4 steps
    torch.testing.assert_close(torch.tensor(emulated_norms), torch.tensor(official_norms), rtol=1e-5, atol=0)
    for name, param in emulated.student.named_parameters():
        torch.testing.assert_close(param, dict(official.student.named_parameters())[name], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(emulated.official.token_grad, official.mask_token.grad, rtol=1e-5, atol=1e-6)

    coefficient = lambda norm: min(1.0, 0.1 / (norm + 1e-6))  # noqa: E731  (clip_grad_norm_'s rule)
    with_bug = [coefficient(n) for n in emulated_norms]
    without = [coefficient(n) for n in correct_norms]
    assert all(c < 1e-3 for c in with_bug), with_bug  # the stale x 65,536 token gradient dominates the norm
    assert all(c > 0.05 for c in without), without
    assert max(with_bug) < min(without) / 100
    # and the updates shrink accordingly: the student moves far less than under correct clipping
    start = tiny().student.state_dict()
    moved = lambda m: sum((p - start[k]).norm() for k, p in m.student.state_dict().items())  # noqa: E731
    assert moved(emulated) < 0.2 * moved(correct)


def test_scale_follows_the_grad_scaler_defaults_and_the_options_conflict():
    method = tiny(reproduce_official=True)
    assert method.official.scale == SCALE
    method.official.steps = 2000
    assert method.official.scale == 2 * SCALE
    assert "official.token_grad" in method.state_dict() and "official.step_count" in method.state_dict()
    assert isinstance(method.official, OfficialClipping) and tiny().official is None
    with pytest.raises(ConfigError, match="learn_mask_token"):
        tiny(reproduce_official=True, learn_mask_token=True)


class Images(torch.utils.data.Dataset):
    def __init__(self, n: int = 16):
        self.x = images(n)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.x[i]}


def test_fit_logs_the_official_clip_norm_only_when_asked(tmp_path):
    norms = {}
    for official in (False, True):
        method = tiny(reproduce_official=official)
        recipe = method.default_train_config(reproduce_official=official)
        config = TrainConfig(**{**recipe, "epochs": 1, "batch_size": 8, "accumulate": 2, "lr": 1e-3, "warmup": 0,
                                "t_initial": None, "num_workers": 0, "track_energy": False, "progress_bar": False,
                                "accelerator": "cpu", "checkpoint_every_epochs": None, "log_every_steps": 1})  # fmt: skip
        fit(method, Images(), config, tmp_path / str(official))
        norms[official] = [row["grad_norm"] for row in read_metrics(tmp_path / str(official), "step")]
    assert len(norms[True]) == len(norms[False]) == 2
    assert min(norms[True]) > 1000 * max(norms[False])  # the clip norm the official run saw
    assert TokenReconstruction.default_train_config(reproduce_official=True, noise_std=0.1)["epochs"] == 120
