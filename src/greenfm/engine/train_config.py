"""``TrainConfig``: every knob of the one training loop, typed and validated up front.

Field descriptions are the help text. The batch size is GLOBAL: it is split over
``devices x num_nodes`` processes and ``accumulate`` micro-batches, so a run means
the same optimisation whatever hardware it lands on.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from greenfm.config import GreenfmConfig

Precision = Literal["auto", "32", "bf16-mixed", "16-mixed"]


class TrainConfig(GreenfmConfig):
    """Optimiser, schedule, precision, devices and bookkeeping for ``greenfm.engine.fit``."""

    epochs: int = Field(100, ge=1, description="Passes over the training set.")
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimiser steps, even mid-epoch (None: run all epochs)."
    )
    batch_size: int = Field(
        128, ge=1, description="GLOBAL batch: images per optimiser step, over all devices and accumulation."
    )
    accumulate: int = Field(1, ge=1, description="Micro-batches accumulated into each optimiser step.")
    lr: float = Field(1e-4, gt=0, description="Peak learning rate (AdamW).")
    min_lr: float = Field(0.0, ge=0, description="Learning rate at the end of the cosine schedule.")
    weight_decay: float = Field(0.05, ge=0, description="AdamW decoupled weight decay (1-D params excluded).")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW (beta1, beta2).")
    eps: float = Field(1e-8, gt=0, description="AdamW epsilon.")
    warmup: int = Field(0, ge=0, description="Linear warm-up length, in units of schedule_interval (steps or epochs).")
    warmup_lr_init: float = Field(0.0, ge=0, description="Learning rate at the start of warm-up.")
    schedule: Literal["cosine", "constant"] = Field(
        "cosine", description="cosine: decay to min_lr over t_initial; constant: lr after warm-up."
    )
    schedule_interval: Literal["step", "epoch"] = Field(
        "step", description="Update the learning rate before every optimiser step, or at the start of every epoch."
    )
    t_initial: int | None = Field(
        None,
        ge=1,
        description="Cosine horizon in schedule_interval units, warm-up included "
        "(None: the whole run; past it the lr stays at min_lr).",
    )
    precision: Precision = Field(
        "auto", description="auto: bf16-mixed on CUDA (16-mixed where bf16 is unsupported), 32 on CPU."
    )
    grad_clip: float | None = Field(None, gt=0, description="Clip the global gradient norm to this value.")
    seed: int = Field(0, description="Seeds data order (with the epoch) and each process's RNGs (with its rank).")
    devices: int = Field(1, ge=1, description="Processes (GPUs, or CPU processes) per node; >1 runs DDP.")
    num_nodes: int = Field(1, ge=1, description="Machines; under torchrun or SLURM the environment decides.")
    accelerator: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when available, else CPU.")
    num_workers: int | None = Field(
        None, ge=0, description="DataLoader worker processes per device (None: chosen from the machine: 0 on CPU, "
        "up to 4 from each GPU process's share of the cores)."
    )
    threads: int | None = Field(
        None, ge=1, description="torch intra-op threads per process (None: the process's share of the cores that "
        "other jobs leave free, less its workers on CPU; never more than OMP_NUM_THREADS)."
    )
    checkpoint_every_steps: int | None = Field(
        None, ge=1, description="Write checkpoints/last.ckpt every this many optimiser steps."
    )
    checkpoint_every_epochs: int | None = Field(
        1, ge=1, description="Write checkpoints/last.ckpt at the end of every this many epochs."
    )
    keep_periodic: int = Field(
        0, ge=-1, description="Also keep this many step-N.ckpt snapshots (0: only last.ckpt; -1: all)."
    )
    log_every_steps: int = Field(10, ge=1, description="Write a metrics.jsonl row every this many steps.")
    drop_last: bool = Field(False, description="Drop the last incomplete global batch of each epoch.")
    on_nonfinite: Literal["skip", "stop"] = Field(
        "stop",
        description="A NaN/Inf loss or gradient: stop (name the step and samples; the last checkpoint stays) or skip "
        "the batch (weights kept; counted in train.log, metrics.jsonl and compute.json).",
    )
    find_unused_parameters: bool = Field(
        False, description="DDP: allow trainable parameters that get no gradient in a step (slower)."
    )
    track_energy: bool = Field(True, description="Measure energy and CO2 with codecarbon / NVML.")
    country_iso_code: str = Field(
        "USA", min_length=3, max_length=3, description="Country (ISO 3166 alpha-3) for the CO2 intensity."
    )
    progress_bar: bool = Field(True, description="Show a progress bar with loss, lr, images/s and ETA.")
    show_ledger: bool = Field(
        True, description="Print the compute ledger at the end (it is always written to compute.json and train.log)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) is above lr ({self.lr})")
        if self.warmup_lr_init > self.lr:
            raise ValueError(f"warmup_lr_init ({self.warmup_lr_init}) is above lr ({self.lr})")
        if self.t_initial is not None and self.warmup >= self.t_initial:
            raise ValueError(f"warmup ({self.warmup}) must be shorter than t_initial ({self.t_initial})")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must lie in [0, 1), got {self.betas}")
        return self
