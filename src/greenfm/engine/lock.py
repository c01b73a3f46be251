"""One writer per run folder: ``RUN_DIR/.greenfm.lock``.

The lock file is created with ``O_CREAT | O_EXCL`` (atomic, also on NFS v3+) and
holds the owner's pid, host, process start time and start date. A second writer is
refused with one line naming them. A lock left by a process that died on this host
(SIGKILL, power loss of a node that was restarted) is stale: the next writer renames
it away (only one contender can win the rename), logs that it took over, and creates
its own. A lock from another host cannot be checked and is never taken over.

The lock is re-entrant within one process (a verb takes it around its whole run and
``fit`` takes it again inside), and released when the outermost holder exits, also on
errors and on the graceful stop after SIGTERM / SIGINT. Written by hand: ``filelock``
and ``fcntl`` locks do not say who holds them and vanish silently on NFS.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from greenfm.errors import GreenfmError

log = logging.getLogger(__name__)

LOCK_NAME = ".greenfm.lock"
_held: dict[Path, int] = {}  # lock path -> nesting depth, in this process


class RunLockedError(GreenfmError):
    """Another live process writes to this run folder."""


def lock_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / LOCK_NAME


@contextmanager
def run_lock(run_dir: str | Path, *, enabled: bool = True) -> Iterator[Path | None]:
    """Hold the run folder's lock while the block runs (a no-op when ``enabled`` is False)."""
    if not enabled:
        yield None
        return
    path = lock_path(run_dir).absolute()
    if path in _held:
        _held[path] += 1
        try:
            yield path
        finally:
            _held[path] -= 1
        return
    acquire(path)
    _held[path] = 1
    try:
        yield path
    finally:
        del _held[path]
        release(path)


def acquire(path: Path) -> None:
    """Create the lock file, taking over a stale one; raise ``RunLockedError`` if a live process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mine = json.dumps(_owner()).encode()
    for _ in range(5):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            owner = read_owner(path)
            if owner is None:  # being written by a contender this instant, or torn: look again
                time.sleep(0.05)
                owner = read_owner(path)
                if owner is None and path.exists():
                    owner = {}
            if owner is not None and not _is_stale(owner):
                raise RunLockedError(_describe(path, owner)) from None
            _take_over(path, owner)
            continue
        try:
            os.write(fd, mine)
            os.fsync(fd)
        finally:
            os.close(fd)
        return
    raise RunLockedError(f"{path}: could not take the run folder's lock (other processes keep contending for it)")


def release(path: Path) -> None:
    """Remove the lock file if this process owns it."""
    owner = read_owner(path)
    if owner is not None and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


def read_owner(path: Path) -> dict[str, Any] | None:
    """The lock's owner record; None when there is no lock; ``{}`` for a lock that cannot be parsed."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        owner = json.loads(text)
    except json.JSONDecodeError:
        return None if not text else {}
    return owner if isinstance(owner, dict) else {}


def _owner() -> dict[str, Any]:
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "start_ticks": _start_ticks(pid),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip


def _is_stale(owner: dict[str, Any]) -> bool:
    """True when the owner is known to be gone: same host, and its pid is dead or now another process."""
    if not owner:  # an empty or torn lock file: its writer died between create and write
        return True
    if owner.get("host") != socket.gethostname():
        return False
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    ticks = owner.get("start_ticks")
    return ticks is not None and _start_ticks(pid) not in (None, ticks)  # the pid was reused


def _take_over(path: Path, owner: dict[str, Any] | None) -> None:
    """Move a stale lock aside (one contender wins the rename), then delete it."""
    aside = path.with_name(f"{path.name}.stale-{os.getpid()}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:  # another contender moved it first
        return
    taken = read_owner(aside)
    if taken and owner is not None and taken.get("pid") != owner.get("pid") and not _is_stale(taken):
        os.rename(aside, path)  # a live lock slipped in between our read and our rename: give it back
        return
    aside.unlink(missing_ok=True)
    who = f"pid {owner.get('pid')} on {owner.get('host')}" if owner else "a process that died while creating it"
    log.warning("%s: took over a stale lock left by %s (no longer running)", path, who)


def _describe(path: Path, owner: dict[str, Any]) -> str:
    since = f" since {owner['started']}" if owner.get("started") else ""
    return (
        f"{path.parent}: another greenfm process writes to this run folder (pid {owner.get('pid')} on "
        f"{owner.get('host')}{since}); wait for it, stop it, or choose another folder (lock: {path}; delete it "
        "only if that process is gone)"
    )


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None
