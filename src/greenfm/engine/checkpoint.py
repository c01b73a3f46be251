"""Checkpoint files: atomic writes, safe reads, periodic snapshots, weights-only loading.

A file is written to a temporary name in the same folder, flushed and fsynced,
then renamed over the target with ``os.replace`` (atomic on POSIX and Windows),
so a crash at any moment leaves either the old file or the new one, never half
of one. Temporary files left by a killed writer are never read. A full disk
raises ``DiskFullError`` (one line: the folder, the space needed, the space free)
after removing the temporary file; the previous file stays intact.

Everything a training checkpoint holds is tensors, lists, dicts and numbers, so
it loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

from greenfm.errors import BadInputError
from greenfm.io_safety import disk_full_guard, plain_file_mode

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "greenfm.engine/1"
_SNAPSHOT = re.compile(r"^step-(\d+)\.ckpt$")


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(handle)`` on a temporary file, fsync it, then rename it to ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with disk_full_guard(path.parent, needed=_size_of(path), what=path.name):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(tmp, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Atomically ``torch.save`` a checkpoint dict (tagged with the engine's format)."""
    return atomic_write(path, lambda handle: torch.save({"format": CHECKPOINT_FORMAT, **state}, handle))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read an engine checkpoint with ``weights_only=True`` onto the CPU."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError("checkpoint not found", source=str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip / pickle readers raise unrelated types
        raise BadInputError(
            f"cannot read checkpoint ({type(exc).__name__}: {_first_line(exc)})", source=str(path)
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise BadInputError(f"not a greenfm training checkpoint (format {CHECKPOINT_FORMAT})", source=str(path))
    return state


def clean_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete temporary files a killed writer left behind; they are never read."""
    removed = [p for p in Path(folder).glob(".*.tmp-*") if p.is_file()]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


def snapshot(last: str | Path, step: int, keep: int) -> Path | None:
    """Keep a ``step-N.ckpt`` copy of ``last`` (a hard link when possible); prune to ``keep`` (-1: all)."""
    if keep == 0:
        return None
    last = Path(last)
    target = last.with_name(f"step-{step}.ckpt")
    try:
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        tmp.unlink(missing_ok=True)
        os.link(last, tmp)  # same inode as last.ckpt; a later os.replace of last.ckpt leaves it alone
        os.replace(tmp, target)
    except OSError:
        atomic_write(target, lambda handle: _copy_into(last, handle))
    if keep > 0:
        snapshots = sorted((int(m.group(1)), p) for p in last.parent.iterdir() if (m := _SNAPSHOT.match(p.name)))
        for _, old in snapshots[:-keep]:
            old.unlink(missing_ok=True)
    return target


def save_exported(module: nn.Module, path: str | Path, *, metadata: dict[str, str]) -> Path:
    """A module's weights as safetensors (shared tensors handled), written atomically."""
    from safetensors.torch import save_model

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    needed = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    with disk_full_guard(path.parent, needed=needed, what=path.name):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            save_model(module, str(tmp), metadata=metadata)
            plain_file_mode(tmp)  # safetensors writes 0600
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return path


@dataclass
class WeightsReport:
    """Keys that did not line up when loading weights into a module."""

    path: str
    missing: list[str] = field(default_factory=list)  # module keys the file did not provide
    unexpected: list[str] = field(default_factory=list)  # file keys the module has no slot for

    @property
    def exact(self) -> bool:
        return not self.missing and not self.unexpected

    def summary(self) -> str:
        if self.exact:
            return f"{self.path}: all keys matched"
        return (
            f"{self.path}: {len(self.missing)} missing ({_few(self.missing)}), "
            f"{len(self.unexpected)} unexpected ({_few(self.unexpected)})"
        )


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A flat state dict from safetensors, a torch state dict, or an engine checkpoint's ``model``."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError("weights file not found", source=str(path))
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors, zip and pickle readers raise unrelated types
        raise BadInputError(
            f"cannot read weights ({type(exc).__name__}: {_first_line(exc)}); "
            "expected .safetensors or a torch state dict",
            source=str(path),
        ) from None
    if isinstance(state, dict):
        for key in ("model", "state_dict"):  # engine checkpoints and common training containers
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BadInputError("not a state dict of tensors", source=str(path))
    for prefix in ("module.", "_orig_mod."):  # DDP and torch.compile wrappers
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def load_weights(module: nn.Module, path: str | Path, *, strict: bool = True) -> WeightsReport:
    """Load weights (only) into ``module``: the "start from these weights" path, not resume.

    ``strict=True`` raises ``BadInputError`` naming the keys that do not line up;
    ``strict=False`` loads what matches and returns (and logs) the report. A shape
    mismatch is always an error.
    """
    state = read_weights(path)
    own = module.state_dict()
    report = WeightsReport(
        str(path), missing=[k for k in own if k not in state], unexpected=[k for k in state if k not in own]
    )
    if strict and not report.exact:
        raise BadInputError(f"weights do not match {type(module).__name__}: {report.summary()}", source=str(path))
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            raise BadInputError(
                f"weights do not fit {type(module).__name__}: '{key}' is {tuple(value.shape)} in the file, "
                f"{tuple(own[key].shape)} in the model",
                source=str(path),
            )
    module.load_state_dict(state, strict=False)
    log.info("loaded weights: %s", report.summary())
    return report


def _size_of(path: Path) -> int | None:
    """The size of the file a write replaces: the best guess of what the new one needs."""
    try:
        return path.stat().st_size or None
    except OSError:
        return None


def _copy_into(source: Path, handle: IO[bytes]) -> None:
    with open(source, "rb") as src:
        shutil.copyfileobj(src, handle)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _few(keys: list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "") if keys else "none"


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else ""
