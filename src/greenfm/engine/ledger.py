"""The compute ledger: what a run cost, written to ``compute.json`` and printed as a table.

Time, samples, steps and FLOPs are counted by the trainer; this file adds the
device, peak memory and energy. Energy comes from codecarbon's
``OfflineEmissionsTracker`` (machine of rank 0; CPU by RAPL counters when readable,
else TDP x load estimate; RAM; GPUs by NVML power) and, on CUDA, from NVML's
cumulative energy counter of each process's GPU (summed over ranks). A quantity
that cannot be measured is the string ``"unavailable"``, never 0, with the reason
under ``unavailable``. Totals carry over a resume: every checkpoint holds the
ledger so far, and a killed session counts up to its last checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from greenfm.engine.checkpoint import atomic_write_text
from greenfm.engine.flops import FLOP_CONVENTION

log = logging.getLogger(__name__)

UNAVAILABLE = "unavailable"
_ADDITIVE = ("wall_time_s", "train_time_s", "energy_kwh", "co2_kg", "gpu_energy_kwh_nvml")


class _Codecarbon:
    """codecarbon's offline tracker, quiet, writing no files; readable while running."""

    def __init__(self, country_iso_code: str):
        from codecarbon import OfflineEmissionsTracker

        logging.getLogger("codecarbon").setLevel(logging.ERROR)  # after import: importing resets it

        self.tracker = OfflineEmissionsTracker(
            country_iso_code=country_iso_code,
            log_level="error",
            save_to_file=False,
            measure_power_secs=15,
            tracking_mode="machine",
        )
        self.tracker.start()

    def method(self) -> str:
        import codecarbon

        hardware = [h.description() for h in getattr(self.tracker, "_hardware", [])]
        cpu = next((h for h in hardware if h.startswith("CPU")), "")
        how = (
            "measured (RAPL/energy counters)"
            if any(k in cpu for k in ("Rapl", "Gadget", "Emi"))
            else "estimated (TDP x load)"
        )
        return f"codecarbon {codecarbon.__version__}: {', '.join(hardware) or 'unknown hardware'}; CPU {how}"

    def read(self) -> tuple[float | None, float | None]:
        """(kWh, kg CO2) so far."""
        co2 = self.tracker.flush()
        energy = getattr(getattr(self.tracker, "_total_energy", None), "kWh", None)
        return (None if energy is None else float(energy)), (None if co2 is None else float(co2))

    def stop(self) -> tuple[float | None, float | None]:
        co2 = self.tracker.stop()
        data = getattr(self.tracker, "final_emissions_data", None)
        energy = getattr(data, "energy_consumed", None)
        return (None if energy is None else float(energy)), (None if co2 is None else float(co2))


class _NvmlCounter:
    """NVML's total-energy counter (mJ since driver load) of one CUDA device."""

    def __init__(self, device: torch.device):
        import pynvml

        pynvml.nvmlInit()
        self._nvml = pynvml
        self.handle = _nvml_handle(pynvml, device)
        self.start_mj = pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)

    def read_joules(self) -> float:
        return (self._nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) - self.start_mj) / 1000.0


def _nvml_handle(pynvml: Any, device: torch.device) -> Any:
    """Match the torch device to NVML by UUID (CUDA_VISIBLE_DEVICES renumbers devices)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    uuid = str(getattr(torch.cuda.get_device_properties(index), "uuid", "")).replace("GPU-", "")
    if uuid:
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            found = pynvml.nvmlDeviceGetUUID(handle)
            found = found.decode() if isinstance(found, bytes) else found
            if found.replace("GPU-", "") == uuid:
                return handle
    return pynvml.nvmlDeviceGetHandleByIndex(index)


def host_peak_rss_bytes() -> int:
    """Peak resident memory of this process (not its DataLoader workers)."""
    try:
        import resource
    except ImportError:  # Windows: psutil's peak working set
        import psutil

        info = psutil.Process().memory_info()
        return int(getattr(info, "peak_wset", info.rss))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


class ComputeLedger:
    """One process's meters for one session, and the merge of all ranks' readings into the ledger.

    ``previous`` is the ledger stored in the checkpoint a resumed run starts from.
    """

    def __init__(
        self,
        *,
        device: torch.device,
        is_global_zero: bool,
        track_energy: bool,
        country_iso_code: str,
        static: dict[str, Any],
        previous: dict[str, Any] | None = None,
    ):
        self.device, self.is_global_zero = device, is_global_zero
        self.static = static  # device count, precision, batch sizes, FLOPs per sample ...
        self.previous = previous or {}
        self.country = country_iso_code
        self.reasons: dict[str, str] = {}
        self.codecarbon: _Codecarbon | None = None
        self.nvml: _NvmlCounter | None = None
        self.energy_method: str | None = None
        self.start = time.perf_counter()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        if not track_energy:
            off = "energy tracking was switched off (track_energy=False)"
            self.reasons.update(energy_kwh=off, co2_kg=off, gpu_energy_kwh_nvml=off)
            return
        if is_global_zero:
            try:
                self.codecarbon = _Codecarbon(country_iso_code)
            except Exception as exc:  # codecarbon missing or unable to start on this platform
                self.reasons["energy_kwh"] = f"codecarbon could not start ({type(exc).__name__}: {exc})"
        if device.type == "cuda":
            try:
                self.nvml = _NvmlCounter(device)
            except Exception as exc:  # pynvml missing, or a GPU without an energy counter (pre-Volta)
                self.reasons["gpu_energy_kwh_nvml"] = f"NVML energy counter unavailable ({type(exc).__name__})"
        else:
            self.reasons["gpu_energy_kwh_nvml"] = "no CUDA device"

    def close(self) -> None:
        """Stop the meters without a reading (a failed run); safe to call twice."""
        if self.codecarbon is not None:
            try:
                self.codecarbon.tracker.stop()
            except Exception:  # already failing; do not mask the original error
                pass
            self.codecarbon = None

    def local_reading(self) -> dict[str, Any]:
        """This rank's peaks and GPU energy for the session so far (to gather on rank 0)."""
        reading: dict[str, Any] = {"peak_host_rss_bytes": host_peak_rss_bytes()}
        if self.device.type == "cuda":
            reading["peak_device_memory_allocated_bytes"] = torch.cuda.max_memory_allocated(self.device)
            reading["peak_device_memory_reserved_bytes"] = torch.cuda.max_memory_reserved(self.device)
        if self.nvml is not None:
            reading["gpu_energy_j"] = self.nvml.read_joules()
        return reading

    def snapshot(
        self,
        readings: list[dict[str, Any]],
        *,
        train_time_s: float,
        progress: dict[str, Any],
        final: bool = False,
    ) -> dict[str, Any]:
        """The ledger so far, earlier sessions included (call on rank 0). ``final`` stops codecarbon."""
        reasons = dict(self.reasons)
        session: dict[str, Any] = {"wall_time_s": time.perf_counter() - self.start, "train_time_s": train_time_s}
        if self.codecarbon is not None:
            try:
                session["energy_kwh"], session["co2_kg"] = self.codecarbon.stop() if final else self.codecarbon.read()
            except Exception as exc:  # a failing meter must not fail the run
                reasons["energy_kwh"] = f"codecarbon failed ({type(exc).__name__}: {exc})"
            self.energy_method = self.codecarbon.method()
            if final:
                self.codecarbon = None
        if any("gpu_energy_j" in r for r in readings):
            session["gpu_energy_kwh_nvml"] = sum(r.get("gpu_energy_j", 0.0) for r in readings) / 3.6e6
        totals = {key: self._add(key, session.get(key), reasons) for key in _ADDITIVE}
        if totals["co2_kg"] == UNAVAILABLE and "energy_kwh" in reasons:
            reasons["co2_kg"] = reasons["energy_kwh"]
        if totals["energy_kwh"] == UNAVAILABLE and _number(totals["gpu_energy_kwh_nvml"]):
            totals["energy_kwh"] = totals["gpu_energy_kwh_nvml"]  # GPUs only: better than nothing, and said so
            self.energy_method = "NVML energy counters of the GPUs only (codecarbon unavailable)"

        static = self.static
        samples, train_time = int(progress.get("samples_seen", 0)), totals["train_time_s"]
        per_sample = static.get("training_flops_per_sample")
        total_flops = per_sample * samples if isinstance(per_sample, (int, float)) else UNAVAILABLE
        wall = totals["wall_time_s"] if _number(totals["wall_time_s"]) else 0.0
        ledger: dict[str, Any] = {
            "wall_time_s": totals["wall_time_s"],
            "train_time_s": train_time,
            "device_type": static.get("device_type"),
            "device_name": static.get("device_name"),
            "device_count": static.get("device_count", 1),
            "num_nodes": static.get("num_nodes", 1),
            "cpu_cores": static.get("cpu_cores"),
            "torch_threads": static.get("torch_threads"),
            "dataloader_workers": static.get("dataloader_workers"),
            "busy_cores_at_start": static.get("busy_cores_at_start"),  # other jobs' load: contention, not the method
            "device_hours": wall * static.get("device_count", 1) / 3600.0,
            **self._peaks(readings, reasons),
            "samples_seen": samples,
            "samples_trained": int(progress.get("samples_trained", samples)),
            "images_per_s": samples / train_time if _number(train_time) and train_time > 0 else UNAVAILABLE,
            "optimizer_steps": int(progress.get("step", 0)),
            "epochs_completed": int(progress.get("epochs_completed", 0)),
            "nonfinite_batches_skipped": int(progress.get("nonfinite_skipped", 0)),
            "dataset_size": static.get("dataset_size"),
            "precision": static.get("precision"),
            "global_batch": static.get("global_batch"),
            "per_device_batch": static.get("per_device_batch"),
            "accumulate": static.get("accumulate"),
            "flop_convention": FLOP_CONVENTION,
            "forward_flops_per_image": static.get("forward_flops_per_image", UNAVAILABLE),
            "step_forward_flops_per_sample": static.get("step_forward_flops_per_sample", UNAVAILABLE),
            "training_flops_per_sample": per_sample if per_sample is not None else UNAVAILABLE,
            "training_flops_source": static.get("training_flops_source", UNAVAILABLE),
            "training_flops_convention": static.get("training_flops_convention", UNAVAILABLE),
            "total_training_flops": total_flops,
            "achieved_flops_per_s": total_flops / train_time
            if _number(total_flops) and _number(train_time) and train_time > 0
            else UNAVAILABLE,
            "energy_kwh": totals["energy_kwh"],
            "co2_kg": totals["co2_kg"],
            "co2_country_iso_code": self.country,
            "gpu_energy_kwh_nvml": totals["gpu_energy_kwh_nvml"],
            "energy_method": self.energy_method or self.previous.get("energy_method", UNAVAILABLE),
            "energy_scope": "codecarbon: the machine of rank 0; NVML: the GPU of every rank",
            "sessions": int(self.previous.get("sessions", 0)) + 1,
        }
        flops_reason = static.get("flops_unavailable_reason", "FLOPs could not be counted")
        reasons.setdefault("forward_flops_per_image", static.get("forward_unavailable_reason", "not counted"))
        for key, value in ledger.items():
            if value == UNAVAILABLE and key not in reasons:
                reasons[key] = flops_reason if "flops" in key else "not measured"
        ledger.update(curated_compute(static, samples, total_flops))
        ledger["unavailable"] = {k: v for k, v in reasons.items() if ledger.get(k) == UNAVAILABLE}
        ledger["run"] = static.get("run", {})
        return ledger

    def _add(self, key: str, now: Any, reasons: dict[str, str]) -> Any:
        """Earlier sessions' total + this session's value, or "unavailable" (and why)."""
        before = self.previous.get(key, 0.0 if not self.previous else None)
        if _number(before) and _number(now) and before + now > 0:
            return before + now
        if key not in reasons:
            if not _number(before):
                reasons[key] = "not measured in an earlier session of this run"
            elif _number(now):
                reasons[key] = "measured 0 (the run is shorter than the meter's resolution)"
            else:
                reasons[key] = "not measured"
        return UNAVAILABLE

    def _peaks(self, readings: list[dict[str, Any]], reasons: dict[str, str]) -> dict[str, Any]:
        """Largest peak over ranks and sessions."""
        out = {}
        for key in ("peak_device_memory_allocated_bytes", "peak_device_memory_reserved_bytes", "peak_host_rss_bytes"):
            values = [v for v in [*(r.get(key) for r in readings), self.previous.get(key)] if _number(v)]
            out[key] = max(values) if values else UNAVAILABLE
            if not values:
                reasons.setdefault(key, f"no CUDA device (ran on {self.device.type})")
        return out


def curated_compute(static: dict[str, Any], samples_seen: int, total_flops: Any) -> dict[str, Any]:
    """A curated run's cost against the full-data run of the same epochs (METHODS 4.4, ``(1 + 19 f) / 20``
    at 20 epochs), measured: this run's training FLOPs (else samples seen) over ``epochs x dataset size``
    samples at the same FLOPs per sample. Empty for a run that trained on all its data."""
    subset, epochs, full = static.get("curated_subset_size"), static.get("epochs"), static.get("dataset_size")
    if not (_number(subset) and _number(epochs) and _number(full)) or not epochs * full:
        return {}
    equivalent = epochs * full
    per_sample = static.get("training_flops_per_sample")
    if _number(total_flops) and _number(per_sample) and per_sample > 0:
        fraction, basis = total_flops / (per_sample * equivalent), "training FLOPs"
    else:
        fraction, basis = samples_seen / equivalent, "samples seen"
    return {"curated_subset_size": int(subset), "curated_fraction": subset / full,
            "full_data_equivalent_samples": int(equivalent), "compute_fraction_of_full_data": fraction,
            "compute_fraction_basis": f"{basis} over a full-data run of {epochs} epochs x {full} samples"}  # fmt: skip


def flops_fields(measured: dict[str, Any], flops_per_sample: float | None) -> dict[str, Any]:
    """Ledger fields from ``flops.method_flops`` and the method's own training figure, if any."""
    fields: dict[str, Any] = {
        "forward_flops_per_image": measured.get("forward_flops_per_image", UNAVAILABLE),
        "step_forward_flops_per_sample": measured.get("step_forward_flops_per_sample", UNAVAILABLE),
        "training_flops_per_sample": None,
    }
    if flops_per_sample is not None:
        fields.update(training_flops_per_sample=float(flops_per_sample), training_flops_source="method")
    elif "step_forward_flops_per_sample" in measured:
        fields.update(
            training_flops_per_sample=3.0 * measured["step_forward_flops_per_sample"],
            training_flops_source="3 x forward of training_step",
        )
    if "training_flops_convention" in measured:
        fields["training_flops_convention"] = measured["training_flops_convention"]
    fields["flops_unavailable_reason"] = measured.get("step_forward_reason", "FLOPs were not counted")
    fields["forward_unavailable_reason"] = measured.get("forward_reason", "not counted")
    return fields


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def write_compute_json(path: str | Path, ledger: dict[str, Any]) -> Path:
    return atomic_write_text(path, json.dumps(ledger, indent=2, default=str) + "\n")


_ROWS = [
    ("wall time", "wall_time_s", "{:.1f} s"),
    ("device", "device_name", "{}"),
    ("devices", "device_count", "{}"),
    ("device-hours", "device_hours", "{:.3g}"),
    (
        "peak device memory (alloc / reserved)",
        ("peak_device_memory_allocated_bytes", "peak_device_memory_reserved_bytes"),
        "gib",
    ),
    ("peak host RSS", "peak_host_rss_bytes", "gib"),
    ("images seen", "samples_seen", "{:,}"),
    ("images trained on", "samples_trained", "{:,}"),
    ("curated subset", "curated_subset_size", "{:,}"),
    ("compute vs full-data run", "compute_fraction_of_full_data", "{:.3f}"),
    ("images/s", "images_per_s", "{:.1f}"),
    ("optimiser steps", "optimizer_steps", "{:,}"),
    ("precision", "precision", "{}"),
    ("batch (global / per device)", ("global_batch", "per_device_batch"), "{}"),
    ("forward GFLOPs / image", "forward_flops_per_image", "giga"),
    ("training GFLOPs / image", "training_flops_per_sample", "giga"),
    ("total training FLOPs", "total_training_flops", "{:.3e}"),
    ("achieved TFLOP/s", "achieved_flops_per_s", "tera"),
    ("energy", "energy_kwh", "{:.3g} kWh"),
    ("CO2", "co2_kg", "{:.3g} kg"),
]


_CURATED_ONLY = ("curated_subset_size", "compute_fraction_of_full_data")


def ledger_rows(ledger: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, formatted value) pairs for the end-of-run table."""
    rows = []
    for label, keys, fmt in _ROWS:
        keys = keys if isinstance(keys, tuple) else (keys,)
        if keys[0] in _CURATED_ONLY and keys[0] not in ledger:
            continue
        rows.append((label, " / ".join(_fmt(ledger.get(k, UNAVAILABLE), fmt) for k in keys)))
    return rows


def print_ledger(ledger: dict[str, Any], console: Any | None = None, *, show: bool = True) -> str:
    """Print the ledger as a small table (rich) unless ``show`` is False; returns it as plain text for the log."""
    rows = ledger_rows(ledger)
    if show:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="compute", show_header=False, box=None, pad_edge=False)
        table.add_column(style="bold")
        table.add_column()
        for label, value in rows:
            table.add_row(label, value)
        (console or Console(stderr=True)).print(table)
    return "\n".join(f"{label:<40} {value}" for label, value in rows)


def ledger_line(ledger: dict[str, Any]) -> str:
    """The ledger in one line (for runs that print many ledgers, e.g. label-efficiency cells)."""

    def value(key: str, fmt: str) -> str:
        return _fmt(ledger.get(key, UNAVAILABLE), fmt)

    return (f"{value('wall_time_s', '{:.1f}')} s wall, {value('device_hours', '{:.3g}')} device-hours on "
            f"{ledger.get('device_count', '?')} {ledger.get('device_type', '?')}, {value('images_per_s', '{:.0f}')} "
            f"images/s, {value('total_training_flops', '{:.3g}')} training FLOPs, energy "
            f"{value('energy_kwh', '{:.3g} kWh')}")  # fmt: skip


def ledger_totals(ledgers: list[dict[str, Any]]) -> dict[str, Any]:
    """Wall time, device-hours, training FLOPs and energy summed over runs; a sum with any run
    unmeasured is ``unavailable``, never a partial total."""
    totals: dict[str, Any] = {"runs": len(ledgers)}
    for key in ("wall_time_s", "device_hours", "total_training_flops", "energy_kwh", "co2_kg"):
        values = [ledger.get(key) for ledger in ledgers]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        totals[key] = float(sum(values)) if numeric and values else UNAVAILABLE
    return totals


def _fmt(value: Any, fmt: str) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return str(value)
    if fmt == "gib":
        return f"{value / 2**30:.2f} GiB"
    if fmt == "giga":
        return f"{value / 1e9:.4g}"
    if fmt == "tera":
        return f"{value / 1e12:.3g}"
    return fmt.format(value)


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
