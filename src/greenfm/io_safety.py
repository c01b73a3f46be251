"""A full disk (or quota) as one line, and writes that leave no partial file behind.

Every verb that writes goes through :func:`disk_full_guard` (or the engine's
``atomic_write``, which uses it): ``OSError`` with ``ENOSPC`` or ``EDQUOT`` becomes a
:class:`DiskFullError` naming the folder, the free space there and, when known, the
space the write needed; the CLI prints it as one line. Files a failed write started
are removed, so a rerun after freeing space starts clean.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from greenfm.errors import GreenfmError

NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class DiskFullError(GreenfmError):
    """A write failed because the file system (or the user's quota) is full (build it with :func:`disk_full`)."""


def disk_full(folder: str | Path, *, needed: int | None = None, what: str = "a file", quota: bool = False) -> DiskFullError:
    """The one-line error: folder, what was being written, space needed (when known) and free."""
    free = free_bytes(folder)
    reason = "disk quota exceeded" if quota else "no space left on the device"
    need = f"; it needs about {human_bytes(needed)}" if needed else ""
    have = f" ({human_bytes(free)} free)" if free is not None else ""
    return DiskFullError(f"{folder}: {reason}{have} while writing {what}{need}; free some space and run again")


def is_disk_full(exc: BaseException) -> bool:
    """True for the errors a full disk or an exhausted quota raise (also when wrapped once)."""
    for candidate in (exc, exc.__cause__, exc.__context__):
        if isinstance(candidate, OSError) and candidate.errno in NO_SPACE_ERRNOS:
            return True
    # writers in compiled code (safetensors, PIL's encoders) keep only the message
    text = str(exc)
    return isinstance(exc, (OSError, RuntimeError)) and ("No space left" in text or "Disk quota exceeded" in text)


@contextmanager
def disk_full_guard(
    folder: str | Path, *, needed: int | None = None, what: str = "a file", cleanup: Iterable[str | Path] = ()
) -> Iterator[None]:
    """Turn a full-disk ``OSError`` inside the block into :class:`DiskFullError`; on it, delete ``cleanup``."""
    try:
        yield
    except DiskFullError:
        _remove(cleanup)
        raise
    except (OSError, RuntimeError) as exc:
        if not is_disk_full(exc):
            raise
        _remove(cleanup)
        quota = isinstance(exc, OSError) and exc.errno == errno.EDQUOT
        raise disk_full(folder, needed=needed, what=what, quota=quota) from None


@contextmanager
def atomic_output(path: str | Path, *, needed: int | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it into place when the block succeeds.

    On any error the temporary file is removed (``path`` keeps its old content, if any),
    and a full disk becomes :class:`DiskFullError`.
    """
    path = Path(path)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")  # keeps the extension, which writers read
    with disk_full_guard(path.parent, needed=needed, what=path.name, cleanup=[tmp]):
        try:
            yield tmp
            os.replace(tmp, path)
        except BaseException:
            _remove([tmp])
            raise


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """``path.write_bytes(data)`` that never leaves a partial (e.g. 0-byte) file behind."""
    with atomic_output(path, needed=len(data)) as tmp:
        Path(tmp).write_bytes(data)
    return Path(path)


def free_bytes(folder: str | Path) -> int | None:
    """Free bytes on the file system holding ``folder`` (its nearest existing parent); None if unknown."""
    path = Path(folder).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def human_bytes(n: float | None) -> str:
    """``1.3 GB``, ``512 MB``, ``12.5 KB``, ``900 B``: three significant figures, never "0.0 GB" for a small size."""
    if n is None:
        return "unknown"
    n = float(n)
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(n) >= size:
            value = n / size
            return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{int(n)} B"


def _remove(paths: Iterable[str | Path]) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except OSError:
            pass


def plain_file_mode(path: str | Path) -> None:
    """Give a file the mode an ordinary ``open(..., "w")`` would (0666 less the umask).

    safetensors writes its files 0600, so an exported model would be unreadable to the
    other users of a shared model folder while its config and card are not.
    """
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)
