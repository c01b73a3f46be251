"""The figures of METHODS 4.3-4.4 as functions: keep ratio vs global batch, scaled ``max_per_cluster``,
the learning rate under either horizon rule, and a curated run's compute as a fraction of full data."""

from __future__ import annotations

import math


def scaled_max_per_cluster(global_batch: int, clusters: int = 6) -> int:
    """``m = max(1, round(0.125 B / K))``: the paper's 10 at B = 480, K = 6, the same ratio elsewhere."""
    return max(1, round(0.125 * global_batch / clusters))


def keep_ratio_formula(global_batch: int, max_per_cluster: int, clusters: int = 6) -> float:
    """``K (0.10 n + min(m, 0.85 n)) / B`` for balanced clusters of ``n = B / K`` (METHODS 4.3)."""
    n = global_batch / clusters
    return clusters * (0.10 * n + min(max_per_cluster, 0.85 * n)) / global_batch


def compute_fraction(kept_fraction: float, epochs: int = 20) -> float:
    """Cost of a curated run over a full-data run: one full epoch, then ``epochs - 1`` on the subset."""
    return (1 + (epochs - 1) * kept_fraction) / epochs


def cosine_lr(step: int, horizon: int, lr: float, min_lr: float, *, clamp: bool) -> float:
    """Cosine from ``lr`` to ``min_lr`` over ``horizon`` steps; unclamped it turns back up after the horizon
    (the official schedule's behaviour past a horizon shorter than the run)."""
    if clamp and step >= horizon:
        return min_lr
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * step / horizon))


def curated_lr(step: int, *, full_steps: int, subset_steps: int, epochs: int = 20, lr: float = 5e-5,
               min_lr: float = 5e-6, horizon: str = "fixed") -> float:  # fmt: skip
    """The lr at optimiser step ``step`` (0-based) of a curated run (epoch 1 of ``full_steps``, then subset
    epochs of ``subset_steps``), as greenfm's engine sets it.

    During epoch 1 the subset is not known yet, so both rules follow ``epochs x full_steps``. From epoch 2:
    ``fixed`` spans the run's real length ``full_steps + (epochs - 1) subset_steps`` (ends at ``min_lr``);
    ``official`` uses ``epochs x subset_steps`` while the step keeps counting (the release's quirk).
    """
    if step < full_steps:
        return cosine_lr(step, epochs * full_steps, lr, min_lr, clamp=True)
    if horizon == "fixed":
        return cosine_lr(step, full_steps + (epochs - 1) * subset_steps, lr, min_lr, clamp=True)
    return cosine_lr(step, epochs * subset_steps, lr, min_lr, clamp=False)
