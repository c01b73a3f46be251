"""Soak test of resume: a CPU pretraining run killed and resumed every few minutes ends bit-identical.

Two ``greenfm pretrain`` runs of the same configuration (tiny ViT on phantom chest
radiographs, one thread, no DataLoader workers) are compared: one uninterrupted, one
stopped every ``--every`` seconds, alternately with SIGKILL (no warning: resume from the
last periodic checkpoint, the lock is stale) and SIGTERM (graceful: checkpoint at the
current step, exit 143), then resumed with ``greenfm pretrain --out RUN --resume``
until it finishes. The final checkpoints' weights and the exported encoders must be
equal to the bit. Prints a table and writes ``benchmarks/results/soak_resume.json``.

    python benchmarks/soak_resume.py --epochs 700 --every 150    # about 25 minutes on 1 busy core
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_common import machine_info  # noqa: E402

GREENFM = [str(Path(sys.executable).with_name("greenfm"))]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _greenfm(*args: str) -> None:
    subprocess.run([*GREENFM, *args], env=_env(), check=True, capture_output=True)


def _pretrain_args(out: Path, data: Path, init: Path, cache: Path, epochs: int) -> list[str]:
    return [
        "pretrain", "--out", str(out), "--data", str(data), "--backbone", "vit_tiny_test", "--img-size", "32",
        "--init", str(init), "--cache", str(cache), "--epochs", str(epochs), "--batch-size", "8",
        "--num-workers", "0", "--set", "train.progress_bar=false", "--set", "train.checkpoint_every_steps=100",
    ]  # fmt: skip


def _prepare(work: Path) -> tuple[Path, Path, Path]:
    """Phantoms, a split manifest, and an init file (a 1-epoch run's exported encoder)."""
    _greenfm("data", "phantoms", "--out", str(work / "phantoms"), "--patients", "40", "--size", "32")
    data = work / "split.csv"
    _greenfm("data", "split", "--data", str(work / "phantoms" / "manifest.csv"), "--out", str(data))
    cache = work / "cache"
    init_run = work / "init_run"
    _greenfm(*_pretrain_args(init_run, data, Path("random"), cache, 1)[:-4], "--set", "train.progress_bar=false")
    return data, init_run / "exported" / "model.safetensors", cache


def _steps_done(run: Path) -> int:
    from greenfm.engine import load_checkpoint

    last = run / "checkpoints" / "last.ckpt"
    return int(load_checkpoint(last)["progress"]["step"]) if last.is_file() else 0


def _run_interrupted(args: list[str], run: Path, every: float, log, total: int) -> list[dict]:
    """Start, stop every ``every`` s (SIGKILL, SIGTERM, ...), resume until the run finishes."""
    sessions, n = [], 0
    first = args
    while True:
        started = time.monotonic()
        has_checkpoint = (run / "checkpoints" / "last.ckpt").is_file()
        command = ["pretrain", "--out", str(run), "--resume"] if has_checkpoint else first  # resume: from config.yaml
        process = subprocess.Popen([*GREENFM, *command], env=_env(), stdout=log, stderr=subprocess.STDOUT)
        kind = "SIGKILL" if n % 2 == 0 else "SIGTERM"
        try:
            code = process.wait(timeout=every)
            kind = "finished"
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL if kind == "SIGKILL" else signal.SIGTERM)
            code = process.wait()
        sessions.append({"session": n + 1, "stop": kind, "exit_code": code, "seconds": time.monotonic() - started,
                         "checkpoint_step": _steps_done(run)})  # fmt: skip
        print(f"  session {n + 1}: {kind:8s} exit {code:4d} after {sessions[-1]['seconds']:6.1f} s, "
              f"checkpoint at step {sessions[-1]['checkpoint_step']}", flush=True)  # fmt: skip
        if kind == "finished":
            if code != 0:
                raise SystemExit(f"the last session failed (exit {code}); see {log.name}")
            return sessions
        expected = {"SIGKILL": -signal.SIGKILL, "SIGTERM": 128 + signal.SIGTERM}[kind]
        outside = sessions[-1]["checkpoint_step"] in (0, total)  # SIGTERM before or after training: plain exit
        if code not in (expected, -signal.SIGTERM if outside else expected):
            raise SystemExit(f"session {n + 1}: {kind} gave exit {code}, expected {expected}; see {log.name}")
        n += 1


def _equal(a: Path, b: Path) -> tuple[bool, float]:
    import torch
    from safetensors.torch import load_file

    from greenfm.engine import load_checkpoint

    ca, cb = load_checkpoint(a / "checkpoints" / "last.ckpt")["model"], load_checkpoint(b / "checkpoints" / "last.ckpt")["model"]
    ea, eb = load_file(str(a / "exported" / "model.safetensors")), load_file(str(b / "exported" / "model.safetensors"))
    diff = max((ca[k].double() - cb[k].double()).abs().max().item() for k in ca)
    same = ca.keys() == cb.keys() and all(torch.equal(ca[k], cb[k]) for k in ca)
    same = same and ea.keys() == eb.keys() and all(torch.equal(ea[k], eb[k]) for k in ea)
    return same, diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=700, help="Epochs of 9 steps (40 phantom patients).")
    parser.add_argument("--every", type=float, default=150.0, help="Seconds between stops.")
    parser.add_argument("--work", default=None, help="Working folder (default: a temporary one).")
    parser.add_argument("--out", default=str(HERE / "results" / "soak_resume.json"))
    args = parser.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="greenfm-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    data, init, cache = _prepare(work)
    print(f"soak in {work}: {args.epochs} epochs, a stop every {args.every:.0f} s", flush=True)

    reference, interrupted = work / "reference", work / "interrupted"
    tic = time.monotonic()
    with open(work / "reference.log", "w") as log:
        subprocess.run([*GREENFM, *_pretrain_args(reference, data, init, cache, args.epochs)], env=_env(),
                       stdout=log, stderr=subprocess.STDOUT, check=True)  # fmt: skip
    reference_s = time.monotonic() - tic
    print(f"  uninterrupted run: {reference_s:.1f} s, {_steps_done(reference)} steps", flush=True)

    tic = time.monotonic()
    with open(work / "interrupted.log", "w") as log:
        sessions = _run_interrupted(_pretrain_args(interrupted, data, init, cache, args.epochs), interrupted,
                                    args.every, log, _steps_done(reference))  # fmt: skip
    interrupted_s = time.monotonic() - tic
    same, diff = _equal(reference, interrupted)
    total_s = time.monotonic() - t0

    print()
    print(f"{'run':<28}{'wall s':>10}{'sessions':>10}{'steps':>8}")
    print(f"{'uninterrupted':<28}{reference_s:>10.1f}{1:>10}{_steps_done(reference):>8}")
    print(f"{'killed/stopped + resumed':<28}{interrupted_s:>10.1f}{len(sessions):>10}{_steps_done(interrupted):>8}")
    stops = [s["stop"] for s in sessions if s["stop"] != "finished"]
    print(f"stops: {stops.count('SIGKILL')} SIGKILL, {stops.count('SIGTERM')} SIGTERM; total wall {total_s / 60:.1f} min")
    print(f"final weights and export bitwise equal: {same} (max |diff| {diff:.3g})")

    result = {
        "benchmark": "soak_resume",
        "command": " ".join(["python", "benchmarks/soak_resume.py", "--epochs", str(args.epochs), "--every",
                             str(args.every)]),  # fmt: skip
        "machine": machine_info(omp_num_threads=1),
        "epochs": args.epochs,
        "steps": _steps_done(reference),
        "uninterrupted_s": reference_s,
        "interrupted_s": interrupted_s,
        "total_wall_s": total_s,
        "sessions": sessions,
        "bitwise_equal": same,
        "max_abs_diff": diff,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_at_end": os.getloadavg()[0],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
