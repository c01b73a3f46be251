"""The "green card": a run's compute ledger as a few plain, labelled quantities.

Reads ``compute.json`` (``greenfm.engine.ledger``) and the exported weights'
parameter count. A quantity the ledger could not measure is the string
``"unavailable"`` there and stays "unavailable" here, with the ledger's reason,
never 0. Shared by the HTML report and the model card.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class GreenItem:
    """One line of the card: ``value`` is the formatted quantity or "unavailable"."""

    key: str
    label: str
    value: str
    detail: str = ""

    @property
    def available(self) -> bool:
        return self.value != UNAVAILABLE


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def significant(value: float, digits: int = 3) -> str:
    """``value`` with ``digits`` significant digits, plain below a million, never rounded to 0."""
    if value == 0:
        return "0"
    if abs(value) < 10 ** -(digits + 1) or abs(value) >= 1e6:
        return f"{value:.{digits - 1}e}"
    text = f"{value:.{digits}g}"
    return f"{float(text):,.10g}" if "e" in text else text


def flops(value: float) -> str:
    for scale, unit in ((1e18, "EFLOP"), (1e15, "PFLOP"), (1e12, "TFLOP"), (1e9, "GFLOP"), (1e6, "MFLOP")):
        if abs(value) >= scale:
            return f"{significant(value / scale)} {unit}"
    return f"{significant(value)} FLOP"


def count(value: float) -> str:
    for scale, unit in ((1e9, "billion"), (1e6, "million")):
        if abs(value) >= scale:
            return f"{significant(value / scale)} {unit}"
    return f"{int(value):,}"


def gib(value: float) -> str:
    return f"{significant(value / 2**30)} GiB"


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{significant(seconds)} s"
    if seconds < 7200:
        return f"{significant(seconds / 60)} min"
    return f"{significant(seconds / 3600)} h"


def green_card(
    ledger: dict[str, Any] | None, *, n_parameters: int | None = None, record: dict[str, Any] | None = None
) -> list[GreenItem]:
    """The card's items, in reading order; ``ledger`` is ``compute.json`` or None when absent."""
    record = record or {}
    if ledger is None:
        ledger, reasons = {}, {}
        default_reason = "no compute ledger (compute.json) in this run"
    else:
        reasons = ledger.get("unavailable") if isinstance(ledger.get("unavailable"), dict) else {}
        default_reason = "not recorded in compute.json"

    def item(key: str, label: str, fmt, detail: str = "") -> GreenItem:
        value = ledger.get(key, UNAVAILABLE)
        if not _number(value):
            why = reasons.get(key) or default_reason
            return GreenItem(key, label, UNAVAILABLE, why)
        return GreenItem(key, label, fmt(value), detail)

    device = ledger.get("device_name") or ""
    devices = ledger.get("device_count")
    device_text = f"{devices} x {device}" if device and _number(devices) else device
    items = [
        item("device_hours", "Device-hours", lambda v: f"{significant(v)} h", device_text),
        item(
            "wall_time_s",
            "Wall-clock time",
            duration,
            f"{ledger.get('sessions')} session(s)" if _number(ledger.get("sessions")) else "",
        ),
        item("energy_kwh", "Energy", lambda v: f"{significant(v)} kWh", str(ledger.get("energy_method") or "")),
        item(
            "co2_kg",
            "CO2 emitted",
            lambda v: f"{significant(v)} kg CO2e",
            f"grid intensity of {ledger['co2_country_iso_code']}" if ledger.get("co2_country_iso_code") else "",
        ),
        item(
            "peak_device_memory_allocated_bytes",
            "Peak GPU memory",
            gib,
            f"reserved {gib(ledger['peak_device_memory_reserved_bytes'])}"
            if _number(ledger.get("peak_device_memory_reserved_bytes"))
            else "",
        ),
        item("peak_host_rss_bytes", "Peak host memory", gib, "resident set of the training process"),
        _parameters(n_parameters, record),
        item(
            "forward_flops_per_image",
            "FLOPs per image (inference)",
            flops,
            "1 multiply-accumulate = 2 FLOPs; see the ledger's convention",
        ),
        item("total_training_flops", "Training FLOPs (total)", flops, str(ledger.get("training_flops_source") or "")),
        item(
            "samples_seen",
            "Images processed",
            count,
            f"{significant(ledger['images_per_s'])} images/s" if _number(ledger.get("images_per_s")) else "",
        ),
    ]
    return items


def _parameters(n_parameters: int | None, record: dict[str, Any]) -> GreenItem:
    counts = record.get("parameters") if isinstance(record.get("parameters"), dict) else {}
    total = n_parameters if n_parameters is not None else counts.get("total")
    if not _number(total):
        return GreenItem("parameters", "Parameters", UNAVAILABLE, "no exported weights to count")
    detail = "in the exported model"
    if _number(counts.get("trainable")):
        share = counts.get("trainable_percent")
        detail = f"{count(counts['trainable'])} trained" + (f" ({share:.3g}%)" if _number(share) else "")
    return GreenItem("parameters", "Parameters", count(total), detail)
