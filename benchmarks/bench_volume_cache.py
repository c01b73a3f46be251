"""Decode-once volume cache vs decoding NIfTI and running the MONAI transforms every epoch.

Claim: one training epoch over CT phantom volumes served from the volume cache
(``VolumeDataset(cache=...)``: a memory-mapped (N, 1, D, H, W) uint16 array at the
contract's pad size, random crop + normalisation when read) is >= 5x faster than
decoding the NIfTI files and running the MONAI transforms for every volume, every
epoch. Two decoding baselines run side by side with the cache in the same process:

- ``greenfm, no cache``: the same ``VolumeDataset`` without a cache (greenfm's own
  decoding path: read, reorient, MONAI ``Spacing``, ``ScaleIntensityRange``,
  ``ResizeWithPadOrCrop``, then the same crop and normalisation);
- ``plain MONAI``: the pipeline a MONAI user writes: ``LoadImage`` ->
  ``EnsureChannelFirst`` -> ``Orientation`` -> ``Spacing`` -> ``ScaleIntensityRange`` ->
  ``ResizeWithPadOrCrop`` -> ``RandSpatialCrop``, through a plain ``DataLoader``.

Volumes: ``greenfm data phantoms --kind ct`` (``--patients`` patients, ``--size`` in-plane
voxels of 1.5 mm, ``size // 2`` slices of 3 mm; the default 256 gives a 384 mm field of
view, a chest CT's, which the preset's 240 x 240 x 120 pad size crops). Contract ``ct-chest`` (METHODS 3.7: 1.5 x 1.5 x 3 mm,
HU [-1000, 200], pad 120x240x240, random crop 96x192x192) unless ``--contract`` names
another preset or JSON file. Batch 2, DataLoader workers ``--workers`` (default 0); the
three loaders take turns for ``--rounds`` rounds (one epoch each per round) and the median
epoch is reported, with the process CPU seconds (the fair figure on a shared machine).

    .venv/bin/python benchmarks/bench_volume_cache.py [--patients 8 --size 256 --rounds 2 --workers 0]

Prints a table and writes benchmarks/results/volume_cache.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import command_line, machine_info, process_cpu_seconds, stamp  # noqa: E402

from greenfm.data.cache import build_cache  # noqa: E402
from greenfm.data.contract import Contract, get_contract  # noqa: E402
from greenfm.data.manifest import load_manifest  # noqa: E402
from greenfm.data.volume_dataset import VolumeDataset  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "volume_cache.json"
BATCH = 2


def monai_dataset(paths: list[str], contract: Contract):
    """The plain MONAI pipeline for ``contract`` (HU window -> [-1, 1], pad -1, random crop)."""
    from monai.data import Dataset
    from monai.transforms import (
        Compose, EnsureChannelFirst, LoadImage, Orientation, RandSpatialCrop, ResizeWithPadOrCrop,
        ScaleIntensityRange, Spacing,
    )  # fmt: skip

    (centre, width), = contract.windows
    # MONAI's spatial axes follow the NIfTI file (x, y, z); the contract's sizes are (z, y, x).
    xyz = lambda t: tuple(reversed(t))  # noqa: E731
    transform = Compose([
        LoadImage(image_only=True), EnsureChannelFirst(), Orientation(axcodes="RAS"),
        Spacing(pixdim=xyz(contract.spacing), mode="bilinear", padding_mode="border"),
        ScaleIntensityRange(a_min=centre - width / 2, a_max=centre + width / 2, b_min=-1.0, b_max=1.0, clip=True),
        ResizeWithPadOrCrop(xyz(contract.stored_size), mode="constant", value=contract.pad_value or 0.0),
        RandSpatialCrop(xyz(contract.size), random_size=False),
    ])  # fmt: skip
    return Dataset([p for p in paths], transform=transform)


def one_epoch(dataset, workers: int) -> tuple[float, float, int, tuple[int, ...]]:
    """(wall s, CPU s, volumes, batch shape) of one pass over ``dataset``."""
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers,
                        collate_fn=None if isinstance(dataset, VolumeDataset) else _stack)  # fmt: skip
    cpu, wall = process_cpu_seconds(), time.perf_counter()
    n, shape = 0, ()
    for batch in loader:
        images = batch["image"] if isinstance(batch, dict) else batch
        n += len(images)
        shape = tuple(images.shape)
    return time.perf_counter() - wall, process_cpu_seconds() - cpu, n, shape


def _stack(items):
    return torch.stack([torch.as_tensor(x) for x in items])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=8, help="CT phantom patients (1-4 volumes each)")
    parser.add_argument("--size", type=int, default=256, help="in-plane voxels of the phantoms (size // 2 slices)")
    parser.add_argument("--contract", default="ct-chest", help="volume contract preset or JSON file")
    parser.add_argument("--rounds", type=int, default=2, help="epochs per loader (median reported)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", module="monai")  # optional-codec and deprecation notices
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    started = time.perf_counter()
    contract = get_contract(args.contract)

    with tempfile.TemporaryDirectory() as tmp:
        from greenfm.data.phantoms import generate_phantoms

        source = generate_phantoms(Path(tmp) / "ct", kind="ct", n_patients=args.patients, size=args.size, seed=0)
        manifest = load_manifest(source)
        t0 = time.perf_counter()
        store = build_cache(manifest, contract, Path(tmp) / "cache", progress=False)
        build_s = time.perf_counter() - t0
        loaders = {
            "greenfm volume cache": VolumeDataset(manifest, contract, train=True, cache=store, labels=False),
            "greenfm, no cache (decode + MONAI each time)": VolumeDataset(manifest, contract, train=True, labels=False),
            "plain MONAI (LoadImage ... RandSpatialCrop)": monai_dataset(list(manifest.table["path"]), contract),
        }
        for dataset in loaders.values():  # warm-up: imports, first file reads
            one_epoch(torch.utils.data.Subset(dataset, [0]) if not isinstance(dataset, VolumeDataset)
                      else VolumeDataset(manifest.subset(np.arange(len(manifest)) < 1), contract, labels=False,
                                         cache=store if dataset.cache is not None else None), 0)  # fmt: skip
        epochs: dict[str, list[tuple[float, float, int, tuple[int, ...]]]] = {name: [] for name in loaders}
        for _ in range(args.rounds):
            for name, dataset in loaders.items():
                epochs[name].append(one_epoch(dataset, args.workers))
        stored = store.meta["shape"]

    n = len(manifest)
    results = {}
    for name, runs in epochs.items():
        wall = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        results[name] = {"epoch_wall_s": round(wall, 3), "epoch_cpu_s": round(cpu, 3),
                         "volumes_per_s": round(n / wall, 2), "batch_shape": list(runs[0][3]),
                         "epochs_wall_s": [round(r[0], 3) for r in runs]}  # fmt: skip
    cache = results["greenfm volume cache"]
    for name, row in results.items():
        row["cache_speedup_wall"] = round(row["epoch_wall_s"] / cache["epoch_wall_s"], 1)
        row["cache_speedup_cpu"] = round(row["epoch_cpu_s"] / max(cache["epoch_cpu_s"], 1e-9), 1)

    print(f"{n} CT phantom volumes ({args.size} px in-plane, {args.size // 2} slices), contract {args.contract}: "
          f"stored {stored[1:]} {store.meta['dtype']} -> crop {list(contract.size)}; batch {BATCH}, "
          f"{args.workers} worker(s), {args.threads} thread(s), median of {args.rounds} epoch(s)")  # fmt: skip
    print(f"cache build (once): {build_s:.1f} s, {store.meta['workers']} process(es)")
    print(f"{'loader':48s} {'epoch s':>8s} {'CPU s':>8s} {'vol/s':>8s} {'cache x (wall)':>15s} {'cache x (CPU)':>14s}")
    for name, row in results.items():
        print(f"{name:48s} {row['epoch_wall_s']:8.2f} {row['epoch_cpu_s']:8.2f} {row['volumes_per_s']:8.1f} "
              f"{row['cache_speedup_wall']:15.1f} {row['cache_speedup_cpu']:14.1f}")  # fmt: skip
    slowest_ratio = min(row["cache_speedup_wall"] for name, row in results.items() if name != "greenfm volume cache")
    out = {
        "claim": "an epoch from the volume cache is >= 5x faster than decoding NIfTI + MONAI transforms each time",
        "holds": slowest_ratio >= 5.0,
        "command": command_line("bench_volume_cache.py"),
        "when": stamp(),
        "volumes": n, "size": args.size, "contract": contract.to_dict(), "stored_shape": stored,
        "cache_build_s": round(build_s, 2), "batch": BATCH, "workers": args.workers, "rounds": args.rounds,
        "results": results,
        "machine": machine_info(load_average_start=load_start, load_average_end=os.getloadavg()),
        "total_wall_s": round(time.perf_counter() - started, 1),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"claim (>= 5x vs every decoding loader, wall): {'holds' if out['holds'] else 'FAILS'} "
          f"(smallest ratio {slowest_ratio:.1f}x); load average {load_start[0]:.1f} at start, "
          f"{os.getloadavg()[0]:.1f} at end; wrote {args.out}")  # fmt: skip


if __name__ == "__main__":
    main()
