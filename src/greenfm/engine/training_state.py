"""What a training checkpoint holds, and what is checked before a run resumes from one.

A checkpoint is one dict of tensors, lists and numbers (``weights_only``-safe): the
method's weights, the optimiser, the schedule, the grad scaler, every process's RNG
states, the position in the data (step, epoch, steps into the epoch), the best
epoch so far, the FLOP counts, the compute ledger so far, the config and the run record.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch

from greenfm.engine.checkpoint import load_checkpoint
from greenfm.engine.rng import restore_rng
from greenfm.engine.run_dir import RunDir
from greenfm.engine.train_config import TrainConfig
from greenfm.errors import ConfigError

log = logging.getLogger(__name__)

# options that may change between an interrupted session and its resume
RESUMABLE_CHANGES = frozenset(
    {
        "epochs", "max_steps", "num_workers", "threads", "log_every_steps", "checkpoint_every_steps",
        "checkpoint_every_epochs", "keep_periodic", "progress_bar", "show_ledger", "track_energy", "country_iso_code",
        "on_nonfinite",
        "devices", "num_nodes",  # the process count itself is checked separately
    }
)  # fmt: skip


def resume_state(run: RunDir, resume: bool | str, config: TrainConfig, world_size: int) -> dict[str, Any] | None:
    """The checkpoint to resume from (None for a new run), after checking it fits this run."""
    has_checkpoint = run.last.is_file()
    if resume == "auto":
        resume = has_checkpoint
    if resume and not has_checkpoint:
        raise ConfigError(f"{run.last}: no checkpoint to resume from")
    if not resume:
        if has_checkpoint:
            raise ConfigError(f"{run.root} already holds a run; resume it or choose another folder")
        return None
    state = load_checkpoint(run.last)
    saved, now = state["config"], config.to_dict()
    changed = [k for k in now if k not in RESUMABLE_CHANGES and saved.get(k) != now[k]]
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in changed)
        raise ConfigError(f"{run.last}: cannot resume with a different training config ({diffs})")
    if state["world_size"] != world_size:
        raise ConfigError(f"{run.last}: written by {state['world_size']} process(es); resume with as many")
    moved = [k for k in ("epochs", "max_steps") if saved.get(k) != now[k]]
    if moved and config.t_initial is None:
        log.warning(
            "resuming with a new %s: the schedule's horizon moves too (set t_initial to pin it)", "/".join(moved)
        )
    return state


def capture_training_state(
    *, method, optimizer, scheduler, precision_plugin, rngs, progress, best, flops, ledger, config, world_size, record
) -> dict[str, Any]:
    """Everything ``restore_training_state`` needs; ``rngs`` holds one RNG state per rank."""
    return {
        "model": method.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": precision_plugin.state_dict() if precision_plugin is not None else {},
        "rng": list(rngs),
        "progress": dict(progress),
        "best": dict(best),
        "flops": dict(flops),
        "ledger": ledger,
        "config": config.to_dict(),
        "world_size": world_size,
        "record": record,
        "torch_threads": torch.get_num_threads(),  # CPU results are bit-exact only on as many threads
    }


def resumed_threads(plan, state: dict[str, Any] | None, config: TrainConfig):
    """The thread plan for a resumed session: the interrupted session's torch thread count when the
    machine chooses it (``threads`` unset), so a resume reproduces the run bit for bit on the same
    hardware; a different explicit ``threads`` is kept, with a warning that sums will round differently."""
    saved = state.get("torch_threads") if state else None
    if saved is None or saved == plan.threads:
        return plan
    if config.threads is None:
        log.info("resuming on %d torch thread(s), as the interrupted session ran (the machine would choose %d)",
                 saved, plan.threads)  # fmt: skip
        return dataclasses.replace(plan, threads=int(saved))
    log.warning(
        "resuming on %d torch thread(s) where the run so far used %d: CPU results will not match an uninterrupted "
        "run bit for bit", plan.threads, saved,
    )  # fmt: skip
    return plan


def restore_training_state(state, *, method, optimizer, scheduler, precision_plugin, rank: int) -> None:
    """Put weights, optimiser, schedule, grad scaler and this rank's RNGs back as they were."""
    method.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if precision_plugin is not None and state["scaler"]:
        precision_plugin.load_state_dict(state["scaler"])
    restore_rng(state["rng"][rank])
