"""Devices, processes and precision: the Lightning Fabric that runs ``fit``.

One process per device. ``devices=N`` (N > 1) runs DDP: on CUDA with NCCL, on CPU
with gloo. The global batch is split evenly: each process takes
``batch_size // (world_size * accumulate)`` images per micro-batch.

How processes start:

* ``greenfm ... --devices 4`` on one machine: Fabric re-runs the same command
  once per extra device (its subprocess launcher), so call ``fit`` from a script
  or the CLI, not from a notebook or a test (use torchrun there).
* torchrun (one or many machines): the environment wins over ``devices`` /
  ``num_nodes``::

      # each of 2 machines, 4 GPUs each
      torchrun --nnodes 2 --nproc-per-node 4 --node-rank $NODE_RANK \\
               --rdzv-backend c10d --rdzv-endpoint $HEAD_NODE:29500 \\
               "$(which greenfm)" pretrain ... --devices 4 --num-nodes 2

* SLURM: one task per GPU; Fabric reads SLURM's variables::

      #SBATCH --nodes=2 --ntasks-per-node=4 --gres=gpu:4
      srun greenfm pretrain ... --devices 4 --num-nodes 2

  (or ``srun --ntasks-per-node=1 torchrun ...`` as above). For a requeued job,
  pass ``resume="auto"`` so the same command continues from ``last.ckpt``.

All machines must see the same run folder (a shared filesystem): every process
reads ``last.ckpt`` on resume, and only global rank 0 writes. The data order
depends on (seed, epoch) only, so a run gives the same global batches on any
number of devices; RNG states are per process, so a resume needs the same
number of processes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from lightning.fabric import Fabric
from lightning.fabric.plugins import MixedPrecision
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.fabric.strategies import DDPStrategy

from greenfm.engine.train_config import TrainConfig
from greenfm.errors import ConfigError


@dataclass
class Hardware:
    """What ``config`` resolves to on this machine."""

    accelerator: str  # "cpu" | "cuda"
    precision: str  # "32" | "bf16-mixed" | "16-mixed"
    devices: int  # processes per node
    num_nodes: int

    @property
    def world_size(self) -> int:
        return self.devices * self.num_nodes


def resolve_hardware(config: TrainConfig) -> Hardware:
    accelerator = config.accelerator
    if accelerator == "auto":
        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    if accelerator == "cuda" and not torch.cuda.is_available():
        raise ConfigError("accelerator='cuda' but no CUDA device is visible")
    precision = config.precision
    if precision == "auto":
        if accelerator == "cuda":
            precision = "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
        else:
            precision = "32"
    if precision == "16-mixed" and accelerator != "cuda":
        raise ConfigError("precision='16-mixed' needs CUDA; use 'bf16-mixed' or '32' on CPU")
    devices, num_nodes = config.devices, config.num_nodes
    if torch.distributed.is_available() and torch.distributed.is_torchelastic_launched():
        devices = int(os.environ["LOCAL_WORLD_SIZE"])
        num_nodes = int(os.environ["WORLD_SIZE"]) // devices
    elif SLURMEnvironment.detect():
        num_nodes = int(os.environ["SLURM_NNODES"])
        devices = int(os.environ["SLURM_NTASKS"]) // num_nodes
    return Hardware(accelerator, precision, devices, num_nodes)


def per_device_batch(config: TrainConfig, world_size: int) -> int:
    """Images per micro-batch on each process; the global batch must split evenly."""
    parts = world_size * config.accumulate
    if config.batch_size % parts:
        raise ConfigError(
            f"batch_size {config.batch_size} does not split over {world_size} process(es) x "
            f"accumulate {config.accumulate}; choose a multiple of {parts}"
        )
    return config.batch_size // parts


def build_fabric(config: TrainConfig, hardware: Hardware) -> tuple[Fabric, MixedPrecision | None]:
    """A launched Fabric, and the mixed-precision plugin whose grad scaler checkpoints carry."""
    kwargs: dict[str, Any] = {}
    plugin = None
    if hardware.precision == "32":
        kwargs["precision"] = "32-true"
    else:
        plugin = MixedPrecision(hardware.precision, device=hardware.accelerator)  # type: ignore[arg-type]
        kwargs["plugins"] = [plugin]
    strategy: Any = "auto"
    if hardware.world_size > 1:
        strategy = DDPStrategy(find_unused_parameters=config.find_unused_parameters)
    fabric = Fabric(
        accelerator=hardware.accelerator,
        devices=hardware.devices,
        num_nodes=hardware.num_nodes,
        strategy=strategy,
        **kwargs,
    )
    fabric.launch()
    return fabric, plugin


def gather_objects(fabric: Fabric, obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if fabric.world_size == 1:
        return [obj]
    out: list[Any] = [None] * fabric.world_size
    torch.distributed.all_gather_object(out, obj)
    return out
