"""What the benchmark scripts share: the machine's description, CPU time, and side-by-side runs.

Side-by-side benchmarks (``bench_train_step.py``, ``bench_embed.py``) run named
configurations, each greenfm against a plain baseline in interleaved rounds, and keep
their results in one JSON file in which a run replaces only the configurations it ran.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info(**extra: Any) -> dict[str, Any]:
    """The machine a result was measured on (CPU, cores, platform, torch, threads, GPU), plus ``extra``."""
    import torch

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "gpu": torch.cuda.is_available(), **extra}  # fmt: skip


def process_cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children."""
    usage = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return sum(u.ru_utime + u.ru_stime for u in usage)


def stamp() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def command_line(script: str) -> str:
    return f".venv/bin/python benchmarks/{script} " + " ".join(sys.argv[1:])


def side_by_side_arguments(description: str, configs: dict, defaults: tuple[str, ...], *,
                           rounds_help: str, quick_help: str) -> argparse.ArgumentParser:  # fmt: skip
    """The options every side-by-side benchmark takes: --rounds, --quick, --only, --patients."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rounds", type=int, default=None, help=rounds_help)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--only", choices=sorted(configs), action="append",
                        help=f"run these configurations (default: {', '.join(defaults)}); "
                        "their results replace the same keys in the JSON file, others are kept")  # fmt: skip
    parser.add_argument("--patients", type=int, default=240, help="phantom patients (~2.5 images each)")
    return parser


def selected_configs(args: argparse.Namespace, configs: dict, quick: dict, defaults: tuple[str, ...]) -> dict:
    """The configurations to run, with --quick and --rounds applied."""
    return {k: {**v, **(quick[k] if args.quick else {}), **({"rounds": args.rounds} if args.rounds else {})}
            for k, v in configs.items() if k in (args.only or defaults)}  # fmt: skip


def write_side_by_side(path: Path, *, claim: str, command: str, results: dict, configs: dict,
                       load_start: tuple[float, ...], started: float) -> dict:  # fmt: skip
    """Write ``path`` (this run's results over the earlier ones of other configurations) and print
    the machine line; returns what was written."""
    import torch

    earlier = json.loads(path.read_text()).get("results", {}) if path.is_file() else {}
    out = {
        "claim": claim,
        "command": command,
        "results": {**{k: v for k, v in earlier.items() if k in configs and k not in results}, **results},
        "machine": machine_info(load_average_start=load_start, load_average_end=os.getloadavg()),
        "total_wall_s": round(time.perf_counter() - started, 1),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, {platform.machine()} {platform.system()}, "
          f"torch threads {torch.get_num_threads()}; load average {load_start[0]:.1f} at start, "
          f"{os.getloadavg()[0]:.1f} at end; {out['total_wall_s']:.0f} s; wrote {path}")  # fmt: skip
    return out
