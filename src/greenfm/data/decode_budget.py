"""A memory budget for decoding, checked from headers before any pixel is allocated.

A small file can declare a huge image: a 0.3 MB PNG of 13,000 x 13,000
16-bit pixels decodes to 338 MB, and costs about ten times that on its way to
the cache (Pillow's buffer, the array, float32 copies per channel). Every
reader computes the decoded size from the header (pixels x samples x bytes
per sample, in the type the decoder allocates) and refuses a file over the
budget with one line naming the file, the size and the budget.

The budget is per decoding process: ``greenfm data cache`` with 8 workers may
hold 8 decodes at once. ``GREENFM_MAX_DECODE_BYTES`` (bytes; suffixes K, M, G
for KiB, MiB, GiB) sets it for 2-D images and volumes alike, the
``max_decode_bytes=`` argument of the readers overrides it. Without either,
a 2-D image may decode to 256 MiB (the largest radiographs and mammograms
decode to under 100 MiB) and a volume to 1 GiB (a 512 x 512 x 2000 int16 CT).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from greenfm.errors import BadInputError, ConfigError

ENV_MAX_DECODE_BYTES = "GREENFM_MAX_DECODE_BYTES"
DEFAULT_IMAGE_BYTES = 256 * 2**20
DEFAULT_VOLUME_BYTES = 2**30
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def decode_budget(*, volume: bool, override: int | None = None) -> int:
    """The budget in bytes: ``override``, else ``GREENFM_MAX_DECODE_BYTES``, else the default for 2-D / 3-D."""
    if override is not None:
        if int(override) <= 0:
            raise ConfigError(f"max_decode_bytes must be positive, not {override}")
        return int(override)
    raw = os.environ.get(ENV_MAX_DECODE_BYTES, "").strip()
    if not raw:
        return DEFAULT_VOLUME_BYTES if volume else DEFAULT_IMAGE_BYTES
    return parse_bytes(raw)


def parse_bytes(text: str) -> int:
    """``"1073741824"``, ``"512M"``, ``"1.5G"`` (binary units; a trailing ``B`` / ``iB`` is allowed)."""
    value = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = value[-1:] if value[-1:] in _UNITS and value[-1:] else ""
    try:
        number = float(value[: len(value) - len(unit)])
    except ValueError:
        raise ConfigError(f"{ENV_MAX_DECODE_BYTES}={text!r} is not a size (e.g. 1073741824, 512M, 2G)") from None
    if not math.isfinite(number) or number <= 0:
        raise ConfigError(f"{ENV_MAX_DECODE_BYTES}={text!r} must be a positive size")
    return int(number * _UNITS[unit])


def check_decode_size(
    path: str | Path,
    shape: tuple[int, ...],
    bytes_per_sample: float,
    *,
    volume: bool,
    budget: int | None = None,
) -> int:
    """Refuse ``shape`` x ``bytes_per_sample`` over the budget; returns the decoded size in bytes."""
    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims):
        raise BadInputError(f"header declares a negative size {tuple(dims)}", source=str(path))
    needed = math.prod(dims) * bytes_per_sample
    limit = decode_budget(volume=volume, override=budget)
    if needed > limit:
        size = " x ".join(str(d) for d in dims)
        raise BadInputError(
            f"decoding needs {human_bytes(needed)} ({size} x {bytes_per_sample:g} bytes), over the decode budget of "
            f"{human_bytes(limit)} per process (raise it with {ENV_MAX_DECODE_BYTES} or max_decode_bytes=)",
            source=str(path),
        )
    return int(needed)


def human_bytes(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"
