"""The demo's 3-D stage in a second process, beside stages 1-7.

The demo's models are tiny and run on one torch thread (``demo_output.torch_threads``),
so on a machine with two or more cores the 3-D stage, which shares nothing with the 2-D
stages, can run on another core meanwhile. The child runs exactly what the demo would run
in its own process (``demo_greenrfm.run_greenrfm_demo``, one torch thread, the same seed),
writes its printed lines to ``greenrfm/stage.log`` and its result to
``greenrfm/stage_result.json``; the demo waits for it at stage 8. The child's finished
stages stay on disk, so a re-run after a failure reuses them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from greenfm.errors import GreenfmError

LOG_FILE = "stage.log"
RESULT_FILE = "stage_result.json"


class BesideStageError(GreenfmError):
    """The 3-D stage failed in its own process; the message (one line) names its log."""


class BesideStage:
    """A running 3-D stage: ``wait()`` returns its result (``run_greenrfm_demo``'s dict)."""

    def __init__(self, out: Path, *, quick: bool, seed: int) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        for name in (RESULT_FILE, LOG_FILE):
            (self.out / name).unlink(missing_ok=True)
        # A fresh interpreter (no forked torch state), reaped only by wait(): the demo's stage clock then
        # counts its CPU seconds in stage 8, where it is shown.
        argv = [sys.executable, "-m", "greenfm.workflows.demo_beside", str(self.out), str(int(seed))]
        self.process = subprocess.Popen(argv + (["--quick"] if quick else []), stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip

    def wait(self) -> dict[str, Any]:
        """Block until the stage ends; its result, with ``beside_wall_s`` = the seconds it ran."""
        code = self.process.wait()
        result_path, log = self.out / RESULT_FILE, self.out / LOG_FILE
        if code != 0 or not result_path.is_file():
            last = _last_line(log)
            raise BesideStageError(f"the 3-D stage failed in its own process (exit code {code})"
                                   f"{': ' + last if last else ''}; its output is in {log}")  # fmt: skip
        return json.loads(result_path.read_text())

    def stop(self) -> None:
        """End the child (the demo itself failed or was interrupted)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def _run(out: str, quick: bool, seed: int) -> None:
    """The child: the stage with its output to the log, its result written atomically."""
    import contextlib

    out_path = Path(out)
    with open(out_path / LOG_FILE, "w", buffering=1) as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log):
        import logging

        from rich.console import Console

        from greenfm.evaluate.metrics import json_safe
        from greenfm.workflows.demo_greenrfm import format_greenrfm_demo, run_greenrfm_demo
        from greenfm.workflows.demo_output import quiet_engine_log, torch_threads

        logging.basicConfig(stream=log, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True)
        console = Console(file=log, width=120)
        started = time.perf_counter()
        try:
            with torch_threads(console), quiet_engine_log():  # the demo's own thread and log settings
                result = run_greenrfm_demo(out_path, quick=quick, seed=seed)
        except BaseException as exc:  # the traceback to the log, its last line the one the demo shows
            import traceback

            traceback.print_exc(file=log)
            log.write(f"{type(exc).__name__}: {exc}\n")
            raise SystemExit(1) from None
        result["beside_wall_s"] = time.perf_counter() - started
        for line in format_greenrfm_demo(result):
            console.print(line)
        tmp = out_path / f".{RESULT_FILE}.tmp"
        tmp.write_text(json.dumps(json_safe(result), default=str) + "\n")
        tmp.replace(out_path / RESULT_FILE)


def _last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


if __name__ == "__main__":
    _run(sys.argv[1], "--quick" in sys.argv[3:], int(sys.argv[2]))
