"""The learning-rate schedule and parameter groups."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from greenfm.engine.optim import apply_schedule, build_optimizer, build_scheduler, current_lr, param_groups
from greenfm.engine.train_config import TrainConfig
from greenfm.errors import ConfigError

# METHODS.md section 9: token reconstruction, stepped at the start of each epoch (as printed there)
TR_LR = {0: "5e-9", 1: "5.00e-6", 5: "2.50e-5", 9: "4.50e-5", 10: "4.878e-5", 25: "4.268e-5", 50: "2.50e-5",
         75: "7.33e-6", 99: "1.73e-8"}  # fmt: skip


def _as_printed(value: float, printed: str) -> bool:
    """``value`` rounds to ``printed`` at its number of significant figures."""
    mantissa = printed.split("e")[0].replace(".", "")
    return f"{value:.{len(mantissa) - 1}e}" == f"{float(printed):.{len(mantissa) - 1}e}"


def _lrs(config: TrainConfig, units: int, total_steps: int = 1) -> list[float]:
    optimizer = torch.optim.AdamW([nn.Parameter(torch.zeros(2, 2))], lr=config.lr)
    scheduler = build_scheduler(optimizer, config, total_steps=total_steps)
    out = []
    for t in range(units):
        apply_schedule(scheduler, config, step=t, epoch=t)
        out.append(current_lr(optimizer))
    return out


def test_token_reconstruction_schedule_matches_methods_section_9():
    config = TrainConfig(
        epochs=120, lr=5e-5, min_lr=5e-9, warmup=10, warmup_lr_init=5e-9, t_initial=100, schedule_interval="epoch"
    )
    lrs = _lrs(config, 120)
    for epoch, printed in TR_LR.items():
        assert _as_printed(lrs[epoch], printed), (epoch, lrs[epoch], printed)
    assert all(lr == pytest.approx(5e-9, rel=1e-9) for lr in lrs[100:120])


def test_step_schedule_spans_the_run_and_constant_stays_flat():
    cosine = _lrs(TrainConfig(lr=1.0, min_lr=0.1, warmup=2, schedule_interval="step"), 12, total_steps=10)
    assert cosine[0] == 0.0 and cosine[1] == pytest.approx(0.5)
    # warm-up counts inside the horizon (warmup_prefix=False): step t of 10 is on the cosine at t
    assert cosine[2] == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 2 / 10)))
    assert all(a > b for a, b in zip(cosine[2:9], cosine[3:10], strict=True)) and cosine[9] > 0.1
    assert cosine[10] == cosine[11] == pytest.approx(0.1)
    flat = _lrs(TrainConfig(lr=0.3, schedule="constant", warmup=1), 6, total_steps=6)
    assert flat[0] == 0.0 and all(lr == pytest.approx(0.3) for lr in flat[1:])


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.gamma = nn.Parameter(torch.ones(4))
        self.pos = nn.Parameter(torch.zeros(1, 3, 4))
        self.frozen = nn.Linear(4, 4).requires_grad_(False)


def test_default_groups_skip_decay_on_1d_and_leave_out_frozen():
    net = _Net()
    groups = param_groups(net, TrainConfig(weight_decay=0.1))
    decayed = {id(p) for g in groups if g["weight_decay"] == 0.1 for p in g["params"]}
    plain = {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    assert decayed == {id(net.body.weight), id(net.pos)}
    assert plain == {id(net.body.bias), id(net.norm.weight), id(net.norm.bias), id(net.gamma)}


def test_method_groups_with_lr_scale_and_absolute_lr_follow_the_schedule():
    net = _Net()

    def optimizer_groups(weight_decay):
        return [
            {"params": [net.body.weight], "lr_scale": 0.5},
            {"params": [net.body.bias], "lr": 0.2, "weight_decay": 0.0},
        ]

    net.optimizer_groups = optimizer_groups
    config = TrainConfig(lr=0.1, schedule="constant")
    optimizer = build_optimizer(net, config)
    scheduler = build_scheduler(optimizer, config, total_steps=4)
    apply_schedule(scheduler, config, step=1, epoch=0)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.05, 0.2])
    net.optimizer_groups = lambda wd: [{"params": [net.body.weight]}, {"params": [net.body.weight]}]
    with pytest.raises(ConfigError, match="two groups"):
        build_optimizer(net, config)


def test_fewer_epochs_rescale_the_recipe_schedule_so_the_lr_anneals():
    from greenfm.engine.optim import describe_schedule, fit_schedule_to_run
    from greenfm.methods.token_reconstruction import default_train_config

    merged = fit_schedule_to_run(default_train_config(), {"epochs": 30, "lr": 1e-3})
    assert (merged["t_initial"], merged["warmup"]) == (30, 3)
    config = TrainConfig(**{k: v for k, v in merged.items() if k in TrainConfig.model_fields})
    lrs = _lrs(config, 30)
    assert lrs[-1] < 1e-5  # annealed (was 8e-4 with the recipe's 100-epoch horizon)
    assert "at epoch 30 of the run's 30" in describe_schedule(config, total_steps=300, steps_per_epoch=10)
    # pinned values stay; the official 120/100 quirk keeps its shape
    pinned = fit_schedule_to_run(default_train_config(), {"epochs": 30, "t_initial": 100, "warmup": 10})
    assert (pinned["t_initial"], pinned["warmup"]) == (100, 10)
    official = fit_schedule_to_run(default_train_config(reproduce_official=True), {"epochs": 60})
    assert (official["t_initial"], official["warmup"]) == (50, 5)
    assert fit_schedule_to_run(default_train_config(), {}) == default_train_config()
    per_step = fit_schedule_to_run(default_train_config(), {"epochs": 30, "schedule_interval": "step"})
    assert per_step["t_initial"] is None  # an epoch horizon is not read as steps


def test_a_warm_up_longer_than_a_short_run_is_shortened_not_an_error():
    import torch

    from greenfm.engine.optim import build_scheduler, describe_schedule
    from greenfm.engine.train_config import TrainConfig

    config = TrainConfig(lr=1e-3, warmup=5, schedule_interval="step")
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    scheduler = build_scheduler(optimizer, config, total_steps=2)
    assert scheduler.warmup_t == 0
    assert "warm-up" not in describe_schedule(config, 2, 2)
    assert build_scheduler(optimizer, config, total_steps=60).warmup_t == 5
