"""Run ``engine_toy.py`` as a real training process (one CPU thread) and watch its run folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

TOY = Path(__file__).resolve().with_name("engine_toy.py")


def start(run_dir: Path, config: dict, *, sleep: float = 0.0, n: int = 48, augment: bool = True,
          resume: bool = False) -> subprocess.Popen:  # fmt: skip
    args = [sys.executable, str(TOY), str(run_dir), json.dumps(config), "--sleep", str(sleep), "--n", str(n)]
    args += [] if augment else ["--no-augment"]
    args += ["--resume"] if resume else []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    # A run started from a terminal: SIGINT and SIGTERM at their defaults. Test runners (pytest-xdist's
    # workers) may ignore SIGINT, and a child inherits an ignored signal, which greenfm rightly keeps ignoring.
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_signals)  # fmt: skip


def _default_signals() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)


def steps_logged(run_dir: Path) -> int:
    """Step rows in metrics.jsonl so far (one per step with log_every_steps=1)."""
    try:
        text = (run_dir / "metrics.jsonl").read_text()
    except FileNotFoundError:
        return 0
    return sum('"type": "step"' in line for line in text.splitlines())


def wait_for_steps(process: subprocess.Popen, run_dir: Path, steps: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while steps_logged(run_dir) < steps:
        if process.poll() is not None:
            raise AssertionError(f"the run ended (exit {process.returncode}) before step {steps}: {process.stderr.read()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"no step {steps} within {timeout} s")
        time.sleep(0.01)


def children_of(pid: int) -> list[int]:
    """Direct child processes (Linux /proc), e.g. DataLoader workers."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
