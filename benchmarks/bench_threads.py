"""Threads and DataLoader workers: greenfm's default against every setting, side by side.

Claim: the default (``threads`` and ``num_workers`` chosen from the machine by
``greenfm.engine.threads``) trains within 10% of the best setting measured here, on
this machine, for the token-reconstruction step (``vit_tiny_test``, 64 px, batch 32,
cxr phantoms read from the decode-once cache) that a first ``greenfm pretrain`` on a
laptop runs; the old default (torch's threads, one per core, and 4 workers) is measured
beside it. Settings alternate round by round (the machine is shared) and each run's
images/s comes from its ``metrics.jsonl`` rows after ``warmup`` steps, so start-up
(Fabric, worker processes, the FLOP count) is left out. The medians over rounds are
compared. The default chooses one of the explicit settings, so its runs are pooled
with that setting's (the same configuration) before the medians are compared.

    .venv/bin/python benchmarks/bench_threads.py [--rounds N] [--steps N] [--patients N]

Prints a table and writes benchmarks/results/threads.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from greenfm.config import build_config
from greenfm.data.cache import build_cache
from greenfm.data.contract import get_contract
from greenfm.data.dataset import ImageDataset
from greenfm.data.manifest import load_manifest
from greenfm.data.phantoms import generate_phantoms
from greenfm.engine import TrainConfig, fit, read_metrics
from greenfm.engine.threads import resolve_threads, usable_cores
from greenfm.methods.token_reconstruction import TokenReconstruction
from greenfm.models.backbones import create_encoder

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import command_line, stamp, write_side_by_side  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "threads.json"
TARGET = 0.90
WARMUP = 3
TORCH_DEFAULT = torch.get_num_threads()  # one per core unless OMP_NUM_THREADS says otherwise


def settings() -> dict[str, dict]:
    """name -> (threads, num_workers); None = greenfm's default choice."""
    cores = usable_cores()
    out = {"default": {"threads": None, "num_workers": None},
           "old default (torch threads, 4 workers)": {"threads": TORCH_DEFAULT, "num_workers": 4}}
    for threads in sorted({1, max(1, cores // 2), cores}):
        for workers in sorted({0, 1, 2}):
            out[f"{threads} thread(s), {workers} worker(s)"] = {"threads": threads, "num_workers": workers}
    return out


def run_once(setting: dict, dataset: ImageDataset, run_dir: Path, steps: int, batch: int) -> dict:
    torch.manual_seed(0)
    method = TokenReconstruction(create_encoder("vit_tiny_test", img_size=64))
    recipe = TokenReconstruction.default_train_config()
    config = build_config(TrainConfig, **{**recipe, "epochs": 1, "max_steps": WARMUP + steps, "batch_size": batch,
                                          "progress_bar": False, "log_every_steps": 1, "seed": 0,
                                          "track_energy": False, **setting})  # fmt: skip
    with contextlib.redirect_stderr(io.StringIO()):
        result = fit(method, dataset, config, run_dir, export=False)
    rows = [r for r in read_metrics(run_dir, "step") if r["step"] > WARMUP]
    seconds = sum(batch / r["images_per_s"] for r in rows)
    return {"images_per_s": batch * len(rows) / seconds, "threads": result.compute.get("torch_threads"),
            "workers": result.compute.get("dataloader_workers")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12, help="measured steps per run (after 3 warm-up steps)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--patients", type=int, default=160)
    args = parser.parse_args()
    logging.getLogger("greenfm").setLevel(logging.ERROR)
    if "OMP_NUM_THREADS" in os.environ:
        print(f"note: OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} caps the default and torch's own count")
    started, load_start = time.perf_counter(), os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="greenfm-bench-threads-", dir="/var/tmp"))
    named = settings()
    speeds: dict[str, list[float]] = {name: [] for name in named}
    chosen: dict[str, list] = {name: [] for name in named}
    try:
        manifest = load_manifest(generate_phantoms(work / "phantoms", n_patients=args.patients, size=128, seed=0))
        contract = get_contract("cxr-medpeft", size=64)
        dataset = ImageDataset(manifest, contract, cache=build_cache(manifest, contract, work / "cache", progress=False),
                               labels=False)  # fmt: skip
        for round_index in range(args.rounds):
            order = list(named) if round_index % 2 == 0 else list(reversed(named))
            for name in order:
                run = run_once(named[name], dataset, work / f"run-{len(os.listdir(work))}", args.steps, args.batch)
                speeds[name].append(run["images_per_s"])
                chosen[name].append((run["threads"], run["workers"]))
                print(f"round {round_index + 1}: {name:<42} {run['images_per_s']:8.1f} images/s "
                      f"({run['threads']} thread(s), {run['workers']} worker(s))", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    # The default picks one of the explicit settings: its runs and that setting's are the same
    # configuration, so they are pooled; the claim compares that pool with the best other setting.
    by_setting: dict[tuple, list[float]] = {}
    for name, values in speeds.items():
        for value, actual in zip(values, chosen[name]):
            by_setting.setdefault(tuple(actual), []).append(value)
    medians = {f"{t} thread(s), {w} worker(s)": statistics.median(v) for (t, w), v in by_setting.items()}
    default_setting = tuple(chosen["default"][0])
    default_key = f"{default_setting[0]} thread(s), {default_setting[1]} worker(s)"
    best_name = max(medians, key=medians.get)
    ratio = medians[default_key] / medians[best_name]
    old = tuple(chosen["old default (torch threads, 4 workers)"][0])
    print(f"\n{'setting (runs pooled by the threads and workers used)':<56}{'runs':>5}{'median images/s':>16}{'vs best':>9}")
    for key, values in sorted(by_setting.items(), key=lambda kv: -statistics.median(kv[1])):
        name = f"{key[0]} thread(s), {key[1]} worker(s)"
        tags = " (default)" * (key == default_setting) + " (old default)" * (key == old)
        print(f"{name + tags:<56}{len(values):>5}{medians[name]:>16.1f}{medians[name] / medians[best_name]:>9.2f}")
    plan = resolve_threads(None, None, device_type="cpu")
    print(f"default chose {default_key} in every round: {len(set(map(tuple, chosen['default']))) == 1}; "
          f"default / best = {ratio:.3f} (target >= {TARGET}); old default / default = "
          f"{medians[f'{old[0]} thread(s), {old[1]} worker(s)'] / medians[default_key]:.3f}")
    results = {"token_reconstruction_vit_tiny_test_64": {
        "medians_images_per_s_by_setting": medians, "runs_by_setting": {f"{t},{w}": v for (t, w), v in by_setting.items()},
        "per_round_images_per_s": speeds, "default_chose": chosen["default"], "default_setting": default_key,
        "best": best_name, "default_over_best": ratio, "target": TARGET, "target_met": ratio >= TARGET,
        "default_plan_at_end": plan.describe(), "steps": args.steps, "warmup": WARMUP, "batch": args.batch,
        "rounds": args.rounds, "measured_at": stamp()}}  # fmt: skip
    write_side_by_side(RESULTS, claim=f"the default threads/workers train within {1 - TARGET:.0%} of the best "
                       "setting on this machine", command=command_line("bench_threads.py"), results=results,
                       configs=results, load_start=load_start, started=started)  # fmt: skip


if __name__ == "__main__":
    main()
