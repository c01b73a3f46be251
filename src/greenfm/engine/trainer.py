"""``fit``: the one training loop every recipe shares (Lightning Fabric).

A *method* is an ``nn.Module`` with ``training_step(batch) -> {"loss": ..., ...}``
(other scalar entries are logged; ``samples_trained``, the samples whose loss reached the
gradient, is summed into the ledger instead), and optionally the hooks of the recipe
contract (``greenfm.methods.base.Recipe``): ``setup(context)`` (rank, world size and a
gradient-keeping ``all_gather``), ``collate(samples)``, ``per_sample_loss`` (False refuses
gradient accumulation: a contrastive loss does not split over micro-batches),
``training_flops_per_sample(batch)``, ``on_epoch_start(epoch)``,
``on_micro_batch(index, count)`` (before each micro-batch of a step), ``clip_gradients(max_norm, clip)``,
``optimizer_groups(weight_decay)``, ``on_after_optimizer_step(step)`` (``step``: 0-based
index of the update just made) and ``export_model()``. Frozen parts (a teacher) have ``requires_grad=False``;
``fit`` calls ``method.train()``, so a method that keeps its teacher in eval mode
overrides ``train()``. State a method needs to resume must live in parameters or
buffers. The engine owns optimiser, schedule, precision, accumulation, clipping,
checkpoints, resume, DDP and the compute ledger.

Resume is exact: weights, optimiser, schedule, grad scaler, every process's RNGs and
the data position are restored, so a killed run continues as if never stopped (bit
for bit on the same hardware and thread count). With ``num_workers > 0`` the order
is exact too, but augmentation drawn inside worker processes is reseeded per (epoch,
resume point), so only ``num_workers=0`` or a dataset that seeds per sample
reproduces it exactly.

While ``fit`` runs it holds the run folder's lock (``engine.lock``: one writer per
folder), turns SIGTERM / SIGINT into a checkpoint at the end of the current step and
exit status 143 / 130 (``engine.signals``), and checks every step for a NaN or Inf loss
or gradient before the optimiser step (``engine.nonfinite``, ``on_nonfinite``). A full
disk ends it with one line and the previous checkpoint intact (``greenfm.io_safety``).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from greenfm.data.dataset import check_batch_against_contract
from greenfm.engine.checkpoint import atomic_write_text, clean_stale_temporaries, save_checkpoint, save_exported, snapshot
from greenfm.engine.distributed import RunContext
from greenfm.engine.flops import batch_size_of, method_flops
from greenfm.engine.launch import build_fabric, gather_objects, per_device_batch, resolve_hardware
from greenfm.engine.lock import run_lock
from greenfm.engine.nonfinite import NonFiniteLossError, describe, record_skip, sample_ids, step_is_finite, stop_message
from greenfm.engine.signals import StopRequest, graceful_stop, ignore_stop_signals, interrupted
from greenfm.engine.ledger import (
    ComputeLedger,
    cpu_count,
    device_name,
    flops_fields,
    print_ledger,
    write_compute_json,
)
from greenfm.engine.optim import (
    apply_schedule,
    build_optimizer,
    build_scheduler,
    current_lr,
    describe_schedule,
    retarget_horizon,
)
from greenfm.engine.progress import ProgressBar
from greenfm.engine.rng import capture_rng, preserved_rng, seed_all
from greenfm.engine.threads import ThreadPlan, resolve_threads, torch_threads
from greenfm.engine.run_dir import MetricsLog, RunDir, log_to_file, plain_json
from greenfm.engine.sampler import EpochShardSampler, derived_seed
from greenfm.engine.selection import BestEpoch
from greenfm.engine.train_config import TrainConfig
from greenfm.engine.training_state import capture_training_state, restore_training_state, resume_state, resumed_threads
from greenfm.errors import ConfigError, GreenfmError

log = logging.getLogger(__name__)
SUBSET_FILE = "subset.json"  # a curated run's training subset (engine._Loop._follow_subset)


@dataclass
class FitResult:
    """What ``fit`` did; the run folder holds the details."""

    run_dir: Path
    steps: int
    epochs_completed: int
    samples_seen: int
    last_checkpoint: Path | None
    best_checkpoint: Path | None = None
    best_metric: float | None = None  # select_metric at the best epoch
    best_epoch: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)  # this session's epoch rows
    compute: dict[str, Any] = field(default_factory=dict)  # the ledger (rank 0)
    exported: Path | None = None


def fit(
    method: nn.Module,
    train_dataset: Dataset,
    config: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool | Literal["auto"] = False,
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
    select_metric: str | None = None,
    select_mode: Literal["max", "min"] = "max",
    flops_per_sample: float | None = None,
    run_record: dict[str, Any] | None = None,
    sampler: Sampler | None = None,
    export: bool = True,
) -> FitResult:
    """Train ``method`` on ``train_dataset`` and fill ``run_dir`` (see ``greenfm.engine.run_dir``).

    Args:
        resume: continue the interrupted run in ``run_dir`` from ``checkpoints/last.ckpt``
            (``"auto"``: if there is one). Without it, a folder holding a checkpoint is refused.
        evaluate: called after every epoch, on rank 0, with ``method.evaluation_model()``, else
            ``method.export_model()``, else the method, in eval mode; returns metrics to log. Its
            random draws do not disturb training.
        select_metric, select_mode: keep the best epoch's weights in ``checkpoints/best.ckpt``.
        flops_per_sample: the method's training FLOPs per sample (else 3 x the counted forward).
        run_record: JSON-safe facts (method, contract, data fraction ...), stored in every
            checkpoint, the export and ``compute.json``.
        sampler: draws each epoch's indices instead of a shuffle (e.g. ``WeightedRandomSampler``);
            its generator is reseeded from (seed, epoch) so resume and DDP sharding still hold.
        export: write ``export_model()``'s weights to ``exported/last.safetensors`` at the end;
            callers that write a self-describing export of their own pass ``False``.
    """
    if not callable(getattr(method, "training_step", None)):
        raise ConfigError(f"{type(method).__name__} has no training_step(batch); it cannot be trained")
    if select_metric is not None and evaluate is None:
        raise ConfigError("select_metric needs an evaluate callback")
    if config.accumulate > 1 and not getattr(method, "per_sample_loss", True):
        raise ConfigError(
            f"{type(method).__name__}'s loss does not split per sample (its negatives span the batch), so "
            f"accumulate={config.accumulate} would change what it computes; use accumulate=1 with a batch that fits "
            "(or more devices)"
        )
    best = BestEpoch(select_metric, select_mode) if select_metric is not None else None
    if len(train_dataset) == 0:  # type: ignore[arg-type]
        raise ConfigError("the training set is empty")
    run = RunDir(Path(run_dir))
    hardware = resolve_hardware(config)
    plan = resolve_threads(config.threads, config.num_workers, device_type=hardware.accelerator,
                           processes=hardware.devices)  # fmt: skip
    micro = per_device_batch(config, hardware.world_size)
    state = resume_state(run, resume, config, hardware.world_size)
    plan = resumed_threads(plan, state, config)  # CPU sums depend on the thread count: keep the run's
    fabric, precision_plugin = build_fabric(config, hardware)
    # one writer per run folder; SIGTERM / SIGINT stop after the current step with a checkpoint
    with run_lock(run.root, enabled=fabric.is_global_zero), graceful_stop() as stop, torch_threads(plan.threads):
        if fabric.is_global_zero:
            run.checkpoints.mkdir(parents=True, exist_ok=True)
            clean_stale_temporaries(run.checkpoints)
        fabric.barrier()
        with log_to_file(run, enabled=fabric.is_global_zero):
            loop = _Loop(fabric, hardware, precision_plugin, method, train_dataset, config, run, micro, state,
                         evaluate=evaluate, best=best, flops_per_sample=flops_per_sample,
                         record=plain_json(run_record or {}), sampler=sampler, export=export, plan=plan)  # fmt: skip
            loop.stop = stop
            try:
                return loop.run()
            finally:
                loop.ledger.close()
                loop.metrics.close()


class _StepModule(nn.Module):
    """Routes Fabric's forward (autocast, DDP hooks) to ``method.training_step``."""

    def __init__(self, method: nn.Module):
        super().__init__()
        self.method = method

    def forward(self, batch: _Opaque) -> dict[str, torch.Tensor]:
        return self.method.training_step(batch.value)


class _Opaque:
    """Hides the batch from Fabric's input casting, so autocast alone decides op dtypes."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value


class _Loop:
    """One session of one run."""

    def __init__(self, fabric, hardware, precision_plugin, method, dataset, config: TrainConfig, run: RunDir,
                 micro: int, state: dict | None, *, evaluate, best, flops_per_sample, record, sampler, export,
                 plan: ThreadPlan):  # fmt: skip
        self.plan = plan
        self.fabric, self.precision_plugin, self.method, self.dataset = fabric, precision_plugin, method, dataset
        self.config, self.run_dir, self.micro, self.record = config, run, micro, record
        self.evaluate, self.best, self.flops_per_sample = evaluate, best, flops_per_sample
        self.export = export
        self.zero, self.rank, self.world = fabric.is_global_zero, fabric.global_rank, fabric.world_size
        seed_all(derived_seed(config.seed, self.rank))
        self.sampler = EpochShardSampler(
            len(dataset), global_batch=config.batch_size, rank=self.rank, world_size=self.world,
            seed=config.seed, drop_last=config.drop_last, source=sampler,
        )  # fmt: skip
        self.steps_per_epoch = self.sampler.steps_per_epoch()
        self.total_steps = min(config.epochs * self.steps_per_epoch, config.max_steps or math.inf)
        optimizer = build_optimizer(method, config)
        self.scheduler = build_scheduler(optimizer, config, total_steps=self.total_steps)
        if hasattr(method, "setup"):
            method.setup(RunContext(rank=self.rank, world_size=self.world, device=fabric.device))
        self.model, self.optimizer = fabric.setup(_StepModule(method), optimizer)
        self.collate = getattr(method, "collate", None)
        self.progress = {"step": 0, "epoch": 0, "steps_in_epoch": 0, "samples_seen": 0, "samples_trained": 0,
                         "epochs_completed": 0}  # fmt: skip
        self.flops: dict[str, Any] = {}
        if state is not None:
            restore_training_state(state, method=method, optimizer=optimizer, scheduler=self.scheduler,
                                   precision_plugin=precision_plugin, rank=self.rank)  # fmt: skip
            self.progress, self.flops = {"samples_trained": 0, **state["progress"]}, dict(state["flops"])
            if state.get("sampler") and hasattr(sampler, "load_state_dict"):
                sampler.load_state_dict(state["sampler"])
            if self.best is not None and state["best"]:
                self.best = BestEpoch(**state["best"])
            log.info("resumed from %s at step %d (epoch %d)", run.last, self.progress["step"], self.progress["epoch"])
        device = fabric.device
        self.ledger = ComputeLedger(
            device=device, is_global_zero=self.zero, track_energy=config.track_energy,
            country_iso_code=config.country_iso_code, previous=state["ledger"] if state else None,
            static={
                "device_type": device.type, "device_name": device_name(device), "device_count": self.world,
                "num_nodes": hardware.num_nodes, "cpu_cores": cpu_count(),
                "torch_threads": plan.threads, "dataloader_workers": plan.workers, "busy_cores_at_start": plan.busy,
                "precision": hardware.precision, "global_batch": config.batch_size,
                "per_device_batch": micro, "accumulate": config.accumulate, "dataset_size": len(dataset),
                "run": record, **flops_fields(self.flops, flops_per_sample),
            },
        )  # fmt: skip
        self.metrics = MetricsLog(
            run, enabled=self.zero, resume_step=self.progress["step"], resume_epoch=self.progress["epoch"]
        )
        self.history: list[dict[str, Any]] = []
        self.stop = StopRequest()  # fit installs the signal-driven one
        self.train_time, self.step_lr = 0.0, 0.0
        self.last_saved_step = self.progress["step"] if state is not None else -1
        if state is None and self.zero:  # a subset file of an earlier, checkpoint-less attempt is stale
            (run.root / SUBSET_FILE).unlink(missing_ok=True)
        self._follow_subset()  # a resumed curated run trains on its stored subset

    def run(self) -> FitResult:
        config, progress = self.config, self.progress
        if progress["step"] >= self.total_steps:
            log.info("%s: the run finished at step %d; nothing to do", self.run_dir.root, progress["step"])
            compute = json.loads(self.run_dir.compute.read_text()) if self.run_dir.compute.is_file() else {}
            exported = self.run_dir.exported / "last.safetensors"
            return self._result(compute, exported if exported.is_file() else None)
        log.info(
            "training %s: %d steps (%d per epoch); global batch %d = %d process(es) x %d image(s) x accumulate %d; "
            "precision %s; %s",
            type(self.method).__name__, self.total_steps, self.steps_per_epoch, config.batch_size,
            self.world, self.micro, config.accumulate, self.ledger.static["precision"], self.plan.describe(),
        )  # fmt: skip
        log.info("schedule: %s", describe_schedule(config, self.total_steps, self.steps_per_epoch))
        self.method.train()
        if progress["step"] == 0 and hasattr(self.method, "warm_up"):
            self._warm_up()
        self.since_log = (time.perf_counter(), progress["samples_seen"])
        bar_on = self.zero and config.progress_bar
        with ProgressBar(total=self.total_steps, done=progress["step"], enabled=bar_on) as bar:
            while progress["step"] < self.total_steps:
                self._run_epoch(bar)
        return self._finish()

    def _run_epoch(self, bar: ProgressBar) -> None:
        config, progress, epoch = self.config, self.progress, self.progress["epoch"]
        if self._stop_requested():  # before this epoch's workers start
            self._interrupt(None)
        if config.schedule_interval == "epoch":
            apply_schedule(self.scheduler, config, step=progress["step"], epoch=epoch)
        start = progress["steps_in_epoch"]
        self.sampler.set_epoch(epoch, skip=start * config.accumulate * self.micro)
        if hasattr(self.method, "on_epoch_start"):
            self.method.on_epoch_start(epoch)
        self._follow_subset()
        loader = DataLoader(
            self.dataset, batch_size=self.micro, sampler=self.sampler, num_workers=self.plan.workers,
            collate_fn=self.collate, worker_init_fn=ignore_stop_signals,
            pin_memory=self.fabric.device.type == "cuda",
            generator=torch.Generator().manual_seed(derived_seed(config.seed, epoch, self.rank, start)),
        )  # fmt: skip
        batches, sums, steps_here = iter(loader), {}, 0
        while progress["steps_in_epoch"] < self.steps_per_epoch and progress["step"] < self.total_steps:
            if self._stop_requested():
                self._interrupt(batches)
            tic = time.perf_counter()
            group = list(itertools.islice(batches, config.accumulate))
            if not group:
                raise RuntimeError(f"epoch {epoch} ran out of batches at step {progress['step']}")
            values = self._train_step(group)
            self.train_time += time.perf_counter() - tic
            if values is None:  # a non-finite step, skipped (on_nonfinite="skip"): nothing trained or logged
                values = {"samples_trained": 0}
            trained = values.pop("samples_trained", None)
            for key, value in values.items():
                sums[key] = sums.get(key, 0.0) + value
            steps_here += 1 if values else 0
            progress["step"] += 1
            progress["steps_in_epoch"] += 1
            seen = sum(batch_size_of(b) for b in group) * self.world
            progress["samples_seen"] += seen
            progress["samples_trained"] += seen if trained is None else int(round(float(trained) * self.world))
            bar.advance(epoch=epoch)
            if values and (progress["step"] % config.log_every_steps == 0 or progress["step"] == self.total_steps):
                self._log_step(values, bar)
            if config.checkpoint_every_steps and progress["step"] % config.checkpoint_every_steps == 0:
                self._save()
        self._end_epoch(sums, steps_here, complete=progress["steps_in_epoch"] >= self.steps_per_epoch)

    def _warm_up(self) -> None:
        """A recipe's ``warm_up(batches)`` hook (e.g. prototypes from the initial model): an iterator over
        this rank's batches of the first epoch, in training order, without gradients; draws nothing from
        the training RNGs. Every rank calls it (the hook may gather)."""
        self.sampler.set_epoch(0)
        loader = DataLoader(self.dataset, batch_size=self.micro, sampler=self.sampler, num_workers=0,
                            collate_fn=self.collate)  # fmt: skip
        with preserved_rng(), torch.no_grad():
            self.method.warm_up(self.fabric.to_device(batch) for batch in loader)

    def _follow_subset(self) -> None:
        """A recipe that curates its data says so through ``training_subset()`` (dataset indices, or None
        for all). From then on the sampler draws from the subset, steps per epoch and the run's total
        follow it, and the per-step cosine's horizon moves by the recipe's ``lr_horizon`` rule
        (``engine.optim.retarget_horizon``). The subset goes to ``subset.json``; on resume the file must
        still match the checkpoint's subset."""
        hook = getattr(self.method, "training_subset", None)
        subset = hook() if hook is not None else None
        if subset is None or sorted(set(subset)) == self.sampler.subset:
            return
        try:
            self.sampler.set_subset(subset)
        except ValueError as exc:
            raise ConfigError(f"curated subset: {exc}") from exc
        progress, config = self.progress, self.config
        self.steps_per_epoch = self.sampler.steps_per_epoch()
        done = progress["step"] - progress["steps_in_epoch"]
        self.total_steps = min(done + (config.epochs - progress["epoch"]) * self.steps_per_epoch,
                               config.max_steps or math.inf)  # fmt: skip
        rule = getattr(self.method, "lr_horizon", "fixed")
        moved = retarget_horizon(self.scheduler, config, rule, total_steps=self.total_steps,
                                 steps_per_epoch=self.steps_per_epoch)  # fmt: skip
        self.ledger.static.update(curated_subset_size=self.sampler.length, epochs=config.epochs)
        self._check_subset_file()
        log.info("curated subset: %d of %d samples, %d steps per epoch, %d steps in all%s", self.sampler.length,
                 self.sampler.full_length, self.steps_per_epoch, self.total_steps, f"; {moved}" if moved else "")  # fmt: skip

    def _check_subset_file(self) -> None:
        path = self.run_dir.root / SUBSET_FILE
        subset = self.sampler.subset or []
        record = {"size": len(subset), "dataset_size": self.sampler.full_length, "indices": subset,
                  "ids": sample_ids(self.dataset, [{"index": subset}])}  # fmt: skip
        summary = getattr(self.method, "curation_summary", None)
        if path.is_file():
            try:
                saved = json.loads(path.read_text())
            except (OSError, ValueError):
                saved = {}
            if saved.get("indices") != record["indices"] or saved.get("ids") != record["ids"]:
                raise ConfigError(
                    f"{path} no longer matches the curated subset stored in the checkpoint ({len(subset)} samples): "
                    "it was edited after the run chose it; restore it, or delete it to have it rewritten from the "
                    "checkpoint"
                )
            return
        if self.zero:
            record["curation"] = summary() if summary is not None else {}
            atomic_write_text(path, json.dumps(plain_json(record), indent=1) + "\n")

    def _train_step(self, group: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """One optimiser step over up to ``accumulate`` micro-batches, each weighted by its size."""
        fabric, config = self.fabric, self.config
        if config.schedule_interval == "step":
            apply_schedule(self.scheduler, config, step=self.progress["step"], epoch=self.progress["epoch"])
        if not self.flops:
            self._count_flops(fabric.to_device(group[0]))
            check_batch_against_contract(self.dataset, group[0].get("image") if isinstance(group[0], dict) else None)
        sizes = [batch_size_of(b) for b in group]
        values: dict[str, torch.Tensor] = {}
        for i, batch in enumerate(group):
            weight = sizes[i] / sum(sizes)
            if hasattr(self.method, "on_micro_batch"):
                self.method.on_micro_batch(i, len(group))
            with fabric.no_backward_sync(self.model, enabled=i < len(group) - 1):
                out = self.model(_Opaque(fabric.to_device(batch)))
                if not isinstance(out, dict) or "loss" not in out:
                    raise GreenfmError(f"{type(self.method).__name__}.training_step must return a dict with 'loss'")
                fabric.backward(out["loss"] * weight)
            for key, value in out.items():
                if isinstance(value, torch.Tensor) and value.numel() == 1:
                    values[key] = values.get(key, 0.0) + value.detach().float().reshape(()) * weight
        if config.grad_clip is not None:
            def clip(max_norm: float) -> torch.Tensor:
                return fabric.clip_gradients(self.model, self.optimizer, max_norm=max_norm, error_if_nonfinite=False)

            recipe_clip = getattr(self.method, "clip_gradients", None)  # the recipe contract's hook
            norm = recipe_clip(config.grad_clip, clip) if recipe_clip is not None else clip(config.grad_clip)
            values["grad_norm"] = norm.detach().float()
        if not self._finite(values, group):
            self.optimizer.zero_grad(set_to_none=True)
            return None
        self.step_lr = current_lr(self.optimizer)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if hasattr(self.method, "on_after_optimizer_step"):
            self.method.on_after_optimizer_step(self.progress["step"])
        return values

    def _finite(self, values: dict[str, Any], group: list[Any]) -> bool:
        """False for a step to skip; raises for on_nonfinite="stop" (see ``greenfm.engine.nonfinite``)."""
        check_grads = self.ledger.static["precision"] != "16-mixed"  # the grad scaler skips overflows itself
        bad = torch.tensor(0.0 if step_is_finite(values, self.method, check_grads=check_grads) else 1.0)
        if self.world > 1:  # every rank takes the same decision
            bad = self.fabric.all_reduce(bad.to(self.fabric.device), reduce_op="sum").cpu()
        if not bad:
            return True
        progress = self.progress
        ids = sample_ids(self.dataset, group)
        if self.config.on_nonfinite == "stop":
            last_step = self.last_saved_step if self.last_saved_step >= 0 and self.run_dir.last.is_file() else None
            loss = float(values.get("loss", float("nan")))
            raise NonFiniteLossError(
                stop_message(progress["step"] + 1, progress["epoch"], ids, self.run_dir.last, last_step, loss)
            )
        record_skip(progress, ids)
        log.warning("non-finite loss or gradient at step %d (epoch %d): batch skipped, weights kept (%s)",
                    progress["step"] + 1, progress["epoch"], describe(ids, n=len(ids)))  # fmt: skip
        self.metrics.write({"type": "nonfinite", "step": progress["step"] + 1, "epoch": progress["epoch"], "ids": ids})
        return False

    def _stop_requested(self) -> bool:
        """A SIGTERM / SIGINT arrived (on any rank: all ranks stop at the same step)."""
        if self.world == 1:
            return self.stop.requested
        flag = torch.tensor(1.0 if self.stop.requested else 0.0, device=self.fabric.device)
        return bool(self.fabric.all_reduce(flag, reduce_op="sum") > 0)

    def _interrupt(self, batches: Any) -> None:
        """Stop the DataLoader workers, write the checkpoint, say how to resume, exit 128 + signal."""
        shutdown = getattr(batches, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        if self.last_saved_step != self.progress["step"]:
            self._save()
        raise interrupted(self.stop, self.run_dir.root, self.run_dir.last, self.progress, announce=self.zero)

    def _mean(self, values: dict[str, Any], steps: int = 1) -> dict[str, float]:
        """Mean over processes (and over ``steps`` when values are sums); every rank must call it."""
        out = {}
        for key, value in sorted(values.items()):
            tensor = torch.as_tensor(value, dtype=torch.float32, device=self.fabric.device) / steps
            out[key] = float(self.fabric.all_reduce(tensor, reduce_op="mean") if self.world > 1 else tensor)
        return out

    def _log_step(self, values: dict[str, torch.Tensor], bar: ProgressBar) -> None:
        progress, mean = self.progress, self._mean(values)
        if not math.isfinite(mean["loss"]):
            raise GreenfmError(f"the loss is {mean['loss']} at step {progress['step']}; lower lr or set grad_clip")
        now, (then, samples_then) = time.perf_counter(), self.since_log
        images_per_s = (progress["samples_seen"] - samples_then) / max(now - then, 1e-9)
        self.since_log = (now, progress["samples_seen"])
        row = {"type": "step", "step": progress["step"], "epoch": progress["epoch"], "lr": self.step_lr, **mean,
               "samples_seen": progress["samples_seen"], "images_per_s": images_per_s, "time": time.time()}  # fmt: skip
        self.metrics.write(row)
        bar.show(loss=row["loss"], lr=row["lr"], images_per_s=images_per_s)

    def _end_epoch(self, sums: dict[str, Any], steps: int, *, complete: bool) -> None:
        """Epoch row, evaluation and selection; an epoch cut short by max_steps is marked partial."""
        progress, epoch = self.progress, self.progress["epoch"]
        row: dict[str, Any] = {"type": "epoch", "epoch": epoch, "step": progress["step"]}
        row.update({k: v for k, v in self._mean(sums, max(steps, 1)).items() if k != "grad_norm"})
        row["lr"] = current_lr(self.optimizer)
        if not complete:
            row["partial"] = True
        if self.evaluate is not None:
            row.update(self._evaluate(epoch))
        if complete:
            progress.update(epoch=epoch + 1, steps_in_epoch=0, epochs_completed=progress["epochs_completed"] + 1)
        self.metrics.write(row)
        self.history.append(row)
        log.info("epoch %d: %s", epoch, json.dumps({k: v for k, v in row.items() if k != "type"}))
        every = self.config.checkpoint_every_epochs
        if complete and every and progress["epochs_completed"] % every == 0:
            self._save()

    def _evaluate(self, epoch: int) -> dict[str, float]:
        metrics = None
        if self.zero:
            target = evaluation_target(self.method)
            self.method.eval()
            try:
                with preserved_rng():
                    metrics = {k: float(v) for k, v in (self.evaluate(target) or {}).items()}
            finally:
                self.method.train()
            if self.best is not None and self.best.consider(metrics, epoch=epoch, step=self.progress["step"]):
                best = {"model": self.method.state_dict(), **self.best.to_dict(), "record": self.record}
                save_checkpoint(best, self.run_dir.best)
                log.info("best %s = %.6g at epoch %d", self.best.metric, self.best.value, epoch)
        metrics = self.fabric.broadcast(metrics, src=0)
        if self.best is not None:
            self.best = self.fabric.broadcast(self.best, src=0)
        return metrics

    def _count_flops(self, batch: dict[str, Any]) -> None:
        """Counted once per run from the first micro-batch, on EVERY rank (a step may hold a
        collective such as an all-gather, which one rank alone would wait on forever); rank 0's
        count is the run's. The recipe's own count (``training_flops_per_sample``) wins over
        the engine's 3 x forward estimate when it gives one."""
        measured = method_flops(self.method, batch)
        if self.flops_per_sample is None and hasattr(self.method, "training_flops_per_sample"):
            try:
                per_sample, convention = self.method.training_flops_per_sample(batch)
            except Exception as exc:  # counting never stops training
                per_sample, convention = None, f"the recipe's count failed ({type(exc).__name__}: {exc})"
            if per_sample is not None:
                self.flops_per_sample = float(per_sample)
            measured["training_flops_convention"] = convention
        self.flops = {"counted": True, **self.fabric.broadcast(measured, src=0)}
        self.flops_per_sample = self.fabric.broadcast(self.flops_per_sample, src=0)
        self.ledger.static.update(flops_fields(self.flops, self.flops_per_sample))

    def _save(self, ledger: dict[str, Any] | None = None) -> None:
        """Write ``last.ckpt`` (and a ``step-N.ckpt`` snapshot when asked); every rank must call it."""
        gathered = gather_objects(self.fabric, {"rng": capture_rng(), "reading": self.ledger.local_reading()})
        if self.zero:
            if ledger is None:
                readings = [g["reading"] for g in gathered]
                ledger = self.ledger.snapshot(readings, train_time_s=self.train_time, progress=self.progress)
            state = capture_training_state(
                method=self.method, optimizer=self.optimizer, scheduler=self.scheduler,
                precision_plugin=self.precision_plugin, rngs=[g["rng"] for g in gathered], progress=self.progress,
                best=self.best.to_dict() if self.best and self.best.value is not None else {}, flops=self.flops,
                ledger=ledger, config=self.config, world_size=self.world, record=self.record,
            )  # fmt: skip
            source = self.sampler.source
            if hasattr(source, "state_dict"):  # e.g. a curated subset the sampler draws from
                state["sampler"] = source.state_dict()
            save_checkpoint(state, self.run_dir.last)
            snapshot(self.run_dir.last, self.progress["step"], self.config.keep_periodic)
        self.last_saved_step = self.progress["step"]
        self.fabric.barrier()

    def _finish(self) -> FitResult:
        readings = gather_objects(self.fabric, self.ledger.local_reading())
        compute: dict[str, Any] = {}
        if self.zero:
            compute = self.ledger.snapshot(readings, train_time_s=self.train_time, progress=self.progress, final=True)
        if self.last_saved_step != self.progress["step"]:
            self._save(ledger=compute)
        exported = None
        if self.zero:
            if self.export and hasattr(self.method, "export_model"):
                meta = {"greenfm": json.dumps({"step": self.progress["step"], "record": self.record}, default=str)}
                exported = save_exported(self.method.export_model(), self.run_dir.exported / "last.safetensors",
                                         metadata=meta)  # fmt: skip
            write_compute_json(self.run_dir.compute, compute)
            shown = self.config.show_ledger  # printed as a table already: the log record is for train.log only
            log.info("compute:\n%s", print_ledger(compute, show=shown), extra={"file_only": shown})
        self.fabric.barrier()
        return self._result(compute, exported)

    def _result(self, compute: dict[str, Any], exported: Path | None) -> FitResult:
        run, best = self.run_dir, self.best if self.best is not None and self.best.value is not None else None
        return FitResult(
            run_dir=run.root,
            steps=self.progress["step"],
            epochs_completed=self.progress["epochs_completed"],
            samples_seen=self.progress["samples_seen"],
            last_checkpoint=run.last if run.last.is_file() else None,
            best_checkpoint=run.best if best else None,
            best_metric=best.value if best else None,
            best_epoch=best.epoch if best else None,
            history=self.history,
            compute=compute,
            exported=exported,
        )


def evaluation_target(method: nn.Module) -> nn.Module:
    """What the per-epoch ``evaluate`` callback scores: ``evaluation_model()`` when the method has one
    (the model as it trains, where ``export_model()`` would build a copy, e.g. with LoRA merged),
    else ``export_model()``, else the method itself."""
    for hook in ("evaluation_model", "export_model"):
        if hasattr(method, hook):
            return getattr(method, hook)()
    return method
