"""AdamW parameter groups and the learning-rate schedule (timm's ``CosineLRScheduler``).

A method may provide ``optimizer_groups(weight_decay) -> list[dict]`` (torch param
groups). A group may carry ``lr_scale`` (layer-wise decay): the schedule multiplies
its value by it, as timm's schedulers do. A group that carries its own ``lr`` is
turned into ``lr_scale = lr / config.lr`` so warm-up, cosine and ``min_lr`` scale with
it. Without ``optimizer_groups``, every trainable parameter is decayed except 1-D
ones (biases, norms, LayerScale gammas).

Epoch lengths that change during a run (a curated subset from epoch 2 on) move the cosine's
horizon by a rule (:func:`retarget_horizon`): ``fixed`` spans the run's real length (the cosine
ends at ``min_lr`` on the last step); ``official`` is CheXficient's release, whose horizon is
``epochs x`` the current epoch's length while the step count runs on, so the cosine bottoms out
early and turns back up (METHODS 4.4).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from timm.scheduler import CosineLRScheduler
from torch import nn

from greenfm.engine.train_config import TrainConfig
from greenfm.errors import ConfigError

log = logging.getLogger(__name__)


def default_param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay on tensors with 2+ dims, none on 1-D ones; only parameters that require grad."""
    decay, no_decay = [], []
    for _, param in module.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def param_groups(method: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    """The method's groups (or the default ones), checked, with every group based on ``config.lr``."""
    if hasattr(method, "optimizer_groups"):
        groups = [dict(g) for g in method.optimizer_groups(config.weight_decay)]
    else:
        groups = default_param_groups(method, config.weight_decay)
    seen: set[int] = set()
    for i, group in enumerate(groups):
        if "params" not in group:
            raise ConfigError(f"{type(method).__name__}.optimizer_groups(): group {i} has no 'params'")
        group["params"] = list(group["params"])
        for param in group["params"]:
            if id(param) in seen:
                raise ConfigError(f"{type(method).__name__}.optimizer_groups(): a parameter is in two groups")
            seen.add(id(param))
        if "lr" in group:  # an absolute lr becomes a scale of the schedule
            group["lr_scale"] = group.get("lr_scale", 1.0) * group.pop("lr") / config.lr
        group.setdefault("weight_decay", config.weight_decay)
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ConfigError(f"{type(method).__name__} has no parameter that requires grad: nothing to train")
    left_out = sum(p.numel() for p in method.parameters() if p.requires_grad and id(p) not in seen)
    if left_out:
        log.info("%d trainable parameter values are in no optimiser group and stay fixed", left_out)
    return groups


def build_optimizer(method: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(
        param_groups(method, config),
        lr=config.lr,
        betas=config.betas,
        eps=config.eps,
        weight_decay=config.weight_decay,
    )


def schedule_horizon(config: TrainConfig, total_steps: int) -> int:
    """t_initial in schedule units: the config's override, else the whole run."""
    if config.t_initial is not None:
        return config.t_initial
    return total_steps if config.schedule_interval == "step" else config.epochs


def effective_warmup(config: TrainConfig, horizon: int) -> int:
    """The warm-up the schedule follows: as configured, or a tenth of a schedule too short to hold it."""
    return config.warmup if config.warmup < horizon else horizon // 10


LR_HORIZONS = ("fixed", "official")


class HorizonCosineScheduler(CosineLRScheduler):
    """timm's cosine; with ``continue_past_horizon`` the cosine goes on past ``t_initial`` (turning back
    up) instead of holding ``lr_min``: the official CheXficient schedule after its horizon shrinks.
    Both attributes are in ``state_dict()``, so a resumed run keeps the horizon it had."""

    continue_past_horizon = False

    def _get_lr(self, t: int) -> list[float]:
        if not self.continue_past_horizon or t < self.t_initial or t < self.warmup_t:
            return super()._get_lr(t)
        return [self.lr_min + 0.5 * (v - self.lr_min) * (1 + math.cos(math.pi * t / self.t_initial))
                for v in self.base_values]  # fmt: skip


def retarget_horizon(scheduler: CosineLRScheduler, config: TrainConfig, rule: str, *, total_steps: int,
                     steps_per_epoch: int) -> str | None:  # fmt: skip
    """Move a per-step cosine's horizon after the epoch length changed; returns what was done (or None).

    ``fixed``: ``t_initial`` = the run's steps as now planned (``total_steps``); ``official``: ``epochs x
    steps_per_epoch`` and the cosine continues past it. A horizon pinned by ``t_initial`` and epoch
    schedules are left alone.
    """
    if rule not in LR_HORIZONS:
        raise ConfigError(f"unknown lr_horizon '{rule}'; valid: {', '.join(LR_HORIZONS)}")
    if config.schedule_interval != "step" or config.t_initial is not None:
        return None
    if rule == "fixed":
        horizon, past = total_steps, False
    else:
        horizon, past = config.epochs * steps_per_epoch, True
    if scheduler.t_initial == horizon and scheduler.continue_past_horizon == past:
        return None
    scheduler.t_initial, scheduler.continue_past_horizon = horizon, past
    return f"lr horizon ({rule}): cosine over {horizon} steps" + (", continuing past it" if past else "")


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, *, total_steps: int) -> CosineLRScheduler:
    """timm's cosine schedule; "constant" is the same schedule with ``lr_min = lr``.

    ``warmup_prefix=False`` means warm-up is counted inside ``t_initial`` (the
    token-reconstruction recipe). Set the lr with :func:`apply_schedule`.
    """
    horizon = schedule_horizon(config, total_steps)
    warmup = effective_warmup(config, horizon)
    if warmup != config.warmup:  # a smoke test with --max-steps 2, or a tiny data set: shortened, and said
        logging.getLogger(__name__).warning(
            "warm-up of %d %s(s) does not fit a schedule of %d; using %d", config.warmup, config.schedule_interval,
            horizon, warmup,
        )  # fmt: skip
    for group in optimizer.param_groups:
        group["lr"] = config.lr  # every group's base is config.lr; lr_scale does the rest
    return HorizonCosineScheduler(
        optimizer,
        t_initial=horizon,
        lr_min=config.lr if config.schedule == "constant" else config.min_lr,
        warmup_t=warmup,
        warmup_lr_init=config.warmup_lr_init,
        warmup_prefix=False,
        t_in_epochs=config.schedule_interval == "epoch",
    )


def apply_schedule(scheduler: CosineLRScheduler, config: TrainConfig, *, step: int, epoch: int) -> None:
    """Set each group's lr for optimiser step ``step`` (0-based) of epoch ``epoch``.

    Epoch schedules change at the start of each epoch (``scheduler.step(epoch)``),
    step schedules before every update (``scheduler.step_update(step)``): the lr used
    by unit ``t`` is the schedule's value at ``t``.
    """
    if config.schedule_interval == "epoch":
        scheduler.step(epoch)
    else:
        scheduler.step_update(step)


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The largest group lr: the unscaled schedule value when no ``lr_scale`` exceeds 1."""
    return max(group["lr"] for group in optimizer.param_groups)


def fit_schedule_to_run(recipe: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """A recipe's ``TrainConfig`` defaults under the user's options, its schedule stretched to the run.

    A recipe states its schedule for its own length (token reconstruction: a 100-epoch
    cosine with 10 warm-up epochs for 100 epochs). When the user changes ``epochs`` and pins
    neither ``t_initial`` nor ``warmup``, both scale by the same ratio, so the cosine still
    ends at the run's end (the official 120-epoch run against a 100-epoch cosine keeps its
    5:6 shape). Warm-up counted in steps (``schedule_interval: step``) is a fixed number of
    updates and stays as given.
    """
    merged = {**recipe, **given}
    if merged.get("schedule_interval") != recipe.get("schedule_interval", merged.get("schedule_interval")):
        if "t_initial" not in given:  # the recipe's horizon is in the other unit: span the run instead
            merged["t_initial"] = None
        return merged
    epochs, recipe_epochs = merged.get("epochs"), recipe.get("epochs")
    if not recipe_epochs or not epochs or epochs == recipe_epochs:
        return merged
    ratio = epochs / recipe_epochs
    if "t_initial" not in given and recipe.get("t_initial"):
        merged["t_initial"] = max(1, round(recipe["t_initial"] * ratio))
    if "warmup" not in given and recipe.get("warmup") and merged.get("schedule_interval", "step") == "epoch":
        horizon = merged.get("t_initial") or epochs
        merged["warmup"] = max(0, min(int(recipe["warmup"] * ratio + 0.5), horizon - 1))
    return merged


def describe_schedule(config: TrainConfig, total_steps: int, steps_per_epoch: int) -> str:
    """One line: the learning rate this run follows, from its first update to its last."""
    unit = config.schedule_interval
    run_length = total_steps if unit == "step" else math.ceil(total_steps / max(1, steps_per_epoch))
    horizon = schedule_horizon(config, total_steps)
    warmup = effective_warmup(config, horizon)
    warm = (f"linear warm-up over {warmup} {unit}(s) from {config.warmup_lr_init:g} to {config.lr:g}, then "
            if warmup else f"from {config.lr:g}, ")  # fmt: skip
    if config.schedule == "constant":
        return f"constant per {unit}: {warm}constant for the rest of the run ({run_length} {unit}s)"
    tail = "" if horizon <= run_length else f" (the run stops at {unit} {run_length}, before the cosine ends)"
    if horizon < run_length:
        tail = f", then {config.min_lr:g} for the last {run_length - horizon} {unit}(s)"
    return (f"cosine per {unit}: {warm}cosine down to {config.min_lr:g} at {unit} {horizon} of the run's "
            f"{run_length}{tail}")
