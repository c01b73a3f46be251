"""The cost of augmenting before downsizing (METHODS 2.4): token-reconstruction steps with the
``rfg`` augmentation on a cache kept at 392 px (augment at the training size, the old order),
at 512 px (greenfm's default for ``rfg``) and at 1024 px (the official resolution).

Two measurements, each with the three source sizes interleaved round by round:

- the data path alone: ``ImageDataset`` over the decode-once cache with the ``rfg``
  augmentation, batches of 16 through a ``DataLoader`` with no workers (one process,
  ``--threads`` torch threads): images/s of one loader process;
- the whole training step: the engine's ``fit`` with ``TokenReconstruction`` on
  ViT-S/14-reg4 at 392 px (random init, fp32, batch ``--batch``), the loader on the
  training thread (``num_workers=0``), so the augmentation's whole cost is in the step;
  images/s from the ``metrics.jsonl`` rows after the first step.

Both are reported as wall-clock images/s and as process CPU milliseconds per image; on
a shared machine the CPU figure (with ``--threads 1``) is the one to compare. Images:
``--images`` synthetic 1024 px fundus-like photographs (a disc with vessels in a black
frame), as ``greenfm data preprocess`` writes them.

    .venv/bin/python benchmarks/bench_source_size.py --threads 1 [--rounds 1] [--steps 3] [--batch 2]

Prints a table and writes benchmarks/results/source_size.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench_common import command_line, machine_info, stamp
from greenfm.data.augment import rfg_augment
from greenfm.data.cache import build_cache
from greenfm.data.contract import get_contract
from greenfm.data.dataset import ImageDataset

SOURCES = {"392 (augment at training size)": None, "512 (greenfm default)": 512, "1024 (official)": 1024}
RESULTS = Path(__file__).resolve().parent / "results" / "source_size.json"


def fundus_images(folder: Path, n: int, side: int = 1024) -> Path:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:side, 0:side]
    for k in range(n):
        cy, cx, r = side // 2 + rng.integers(-40, 40), side // 2 + rng.integers(-40, 40), int(side * 0.45)
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
        vessels = np.abs(np.sin((yy + (0.3 + 0.1 * k) * xx) / 17.0)) < 0.06
        disc = np.stack([200 - 60 * vessels, 100 - 40 * vessels, 40 + 0 * vessels], axis=-1)
        image = np.where(inside[..., None], disc, rng.integers(0, 4, (side, side, 3))).astype(np.uint8)
        Image.fromarray(image).save(folder / f"{k}.jpg", quality=90)
    manifest = folder / "manifest.csv"
    manifest.write_text("path,patient_id\n" + "".join(f"{k}.jpg,p{k}\n" for k in range(n)))
    return manifest


def contract_for(source: int | None):
    return get_contract("rfg").replace(source_size=source)


def data_path_rate(manifest: Path, cache: Path, source: int | None, batches: int) -> tuple[float, float]:
    """(images/s, CPU ms per image) of one loader process."""
    contract = contract_for(source)
    store = build_cache(manifest, contract, cache, progress=False)
    dataset = ImageDataset(manifest, contract, cache=store, augment=rfg_augment(contract), labels=False)
    loader = torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=True, num_workers=0)
    torch.manual_seed(0)
    next(iter(loader))  # warm-up
    seen, tic, cpu = 0, time.perf_counter(), time.process_time()
    while seen < batches * 16:
        for batch in loader:
            seen += len(batch["image"])
            if seen >= batches * 16:
                break
    return seen / (time.perf_counter() - tic), 1e3 * (time.process_time() - cpu) / seen


def step_rate(manifest: Path, cache: Path, source: int | None, steps: int, batch: int, run: Path) -> tuple[float, float]:
    """(images/s, CPU ms per image) of ``fit``'s steps after the first."""
    from greenfm.engine import TrainConfig, fit, read_metrics
    from greenfm.methods.token_reconstruction import TokenReconstruction
    from greenfm.models import create_encoder

    contract = contract_for(source)
    store = build_cache(manifest, contract, cache, progress=False)
    dataset = ImageDataset(manifest, contract, cache=store, augment=rfg_augment(contract), labels=False)
    class Timed(TokenReconstruction):  # CPU time at the end of every step
        def on_after_optimizer_step(self, step: int) -> None:
            super().on_after_optimizer_step(step)
            cpu_marks.append(time.process_time())

    cpu_marks: list[float] = []
    torch.manual_seed(0)
    method = Timed(create_encoder("vit_small_patch14_reg4_dinov2", img_size=392))
    config = TrainConfig(**{**TokenReconstruction.default_train_config(), "epochs": 1, "max_steps": steps,
                            "batch_size": batch, "num_workers": 0, "precision": "32", "accelerator": "cpu",
                            "track_energy": False, "progress_bar": False, "log_every_steps": 1,
                            "checkpoint_every_epochs": None})  # fmt: skip
    shutil.rmtree(run, ignore_errors=True)
    with contextlib.redirect_stdout(io.StringIO()):
        fit(method, dataset, config, run, export=False)
    rows = read_metrics(run, "step")[1:]  # each row times the steps since the previous one
    cpu_ms = 1e3 * (cpu_marks[-1] - cpu_marks[0]) / (batch * (len(cpu_marks) - 1))
    return statistics.median(r["images_per_s"] for r in rows), cpu_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batches", type=int, default=6, help="Batches of 16 timed per data-path measurement.")
    parser.add_argument("--steps", type=int, default=3, help="fit steps per step measurement (the first is not timed).")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--skip-steps", action="store_true", help="Only the data path.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="greenfm-source-size-", dir="/var/tmp" if os.path.isdir("/var/tmp") else None))
    try:
        images = work / "images"
        images.mkdir()
        manifest = fundus_images(images, args.images)
        data: dict[str, list[tuple[float, float]]] = {name: [] for name in SOURCES}
        step: dict[str, list[tuple[float, float]]] = {name: [] for name in SOURCES}
        for round_ in range(args.rounds):
            order = list(SOURCES) if round_ % 2 == 0 else list(reversed(SOURCES))
            for name in order:
                data[name].append(data_path_rate(manifest, work / "cache", SOURCES[name], args.batches))
                if not args.skip_steps:
                    step[name].append(step_rate(manifest, work / "cache", SOURCES[name], args.steps, args.batch,
                                                work / "run"))  # fmt: skip
                print(f"round {round_ + 1} {name}: data {data[name][-1]}" + (f", step {step[name][-1]}" if step[name] else ""),
                      flush=True)  # fmt: skip
        base = list(SOURCES)[0]
        med = lambda rows, k: statistics.median(r[k] for r in rows) if rows else None  # noqa: E731
        results = {}
        print(f"\n{'cache side':32} {'data img/s':>10} {'data CPU ms/img':>16} {'step img/s':>11} {'step CPU ms/img':>16}"
              f" {'step CPU x 392':>15}")  # fmt: skip
        for name in SOURCES:
            results[name] = {
                "source_size": SOURCES[name], "data_images_per_s": med(data[name], 0),
                "data_cpu_ms_per_image": med(data[name], 1), "step_images_per_s": med(step[name], 0),
                "step_cpu_ms_per_image": med(step[name], 1), "data_rounds": data[name], "step_rounds": step[name],
            }  # fmt: skip
            r, b = results[name], results[base]
            r["step_cpu_ratio_to_392"] = (r["step_cpu_ms_per_image"] / b["step_cpu_ms_per_image"]
                                          if b["step_cpu_ms_per_image"] else None)  # fmt: skip
            step_text = f"{r['step_images_per_s']:11.3f} {r['step_cpu_ms_per_image']:16.0f} {r['step_cpu_ratio_to_392']:15.4f}" \
                if r["step_images_per_s"] else ""  # fmt: skip
            print(f"{name:32} {r['data_images_per_s']:10.1f} {r['data_cpu_ms_per_image']:16.1f} {step_text}")
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps({
            "claim": "augmenting at a source resolution above 392 px costs data-path time, not model time",
            "command": command_line("bench_source_size.py"), "time": stamp(), "load_average": os.getloadavg(),
            "machine": machine_info(), "images": args.images, "batch": args.batch, "results": results,
        }, indent=2))  # fmt: skip
        print(f"wrote {RESULTS}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
