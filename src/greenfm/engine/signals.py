"""A graceful stop on SIGTERM (SLURM's requeue and preemption, ``kill``) and SIGINT (Ctrl-C).

While ``fit`` runs, the first signal only sets a flag: the current optimiser step
finishes, the engine writes ``checkpoints/last.ckpt`` atomically, stops the
DataLoader workers, prints one line saying how to resume and raises
:class:`TrainingInterrupted`, a ``SystemExit`` whose code is the shell's convention
(128 + signal: 143 for SIGTERM, 130 for SIGINT), so schedulers and shells read it as
usual. A second signal stops at once (the last checkpoint stays intact).

DataLoader workers ignore both signals (a terminal's Ctrl-C and SLURM's SIGTERM reach
the whole process group): the main process shuts them down after its checkpoint.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingInterrupted(SystemExit):
    """Training stopped on a signal after writing a checkpoint; ``code`` is 128 + the signal number."""

    def __init__(self, signum: int, message: str):
        super().__init__(128 + signum)
        self.signum, self.message = signum, message

    def __str__(self) -> str:
        return self.message


class StopRequest:
    """Set by the first SIGTERM / SIGINT while installed; read by the training loop between steps."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:  # the second signal: stop now
            _restore_default(signum)
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)
        self.signum = signum
        log.info(
            "%s received: finishing the current step and writing a checkpoint (send it again to stop at once)",
            signal.Signals(signum).name,
        )


@contextmanager
def graceful_stop(enabled: bool = True) -> Iterator[StopRequest]:
    """Install the flag-setting handlers for the block (main thread only; elsewhere the request never fires)."""
    request = StopRequest()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous: dict[int, Any] = {}
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) is signal.SIG_IGN:  # e.g. SIGINT of a background job (nohup, &)
            continue
        previous[signum] = signal.signal(signum, request._handle)
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def ignore_stop_signals(worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: let the main process decide when workers stop."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def _console_logging(logger: logging.Logger) -> bool:
    """True when a WARNING of ``logger`` reaches a console stream handler (not only a log file)."""
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            stream = getattr(handler, "stream", None)
            if not isinstance(handler, logging.FileHandler) and stream in (sys.stderr, sys.stdout):
                if handler.level <= logging.WARNING:
                    return True
        if not current.propagate:
            return False
        current = current.parent  # type: ignore[assignment]
    return False


def _restore_default(signum: int) -> None:
    signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)


def resume_hint(run_dir: Path) -> str:
    """How to continue this run folder: the verb that started it (from config.yaml), else the API."""
    config = Path(run_dir) / "config.yaml"
    try:
        sections = {line.split(":", 1)[0] for line in config.read_text().splitlines() if line[:1].isalpha()}
    except OSError:
        sections = set()
    for verb in ("pretrain", "finetune"):
        if verb in sections:
            return f"greenfm {verb} --out {run_dir} --resume"
    return f"fit(..., run_dir={str(run_dir)!r}, resume=True)"


def interrupted(request: StopRequest, run_dir: Path, checkpoint: Path, progress: dict[str, Any], *,
                announce: bool = True) -> TrainingInterrupted:  # fmt: skip
    """The exception that ends a stopped run, after saying (stderr and train.log) where it stopped."""
    message = (
        f"stopped by {request.name} at step {progress['step']} (epoch {progress['epoch']}); checkpoint: "
        f"{checkpoint}; resume with: {resume_hint(run_dir)}"
    )
    if announce:
        log.warning("%s", message)  # train.log, and the console where logging prints there (the CLI)
        if not _console_logging(log):
            print(message, file=sys.stderr, flush=True)
    return TrainingInterrupted(request.signum or signal.SIGTERM, message)
