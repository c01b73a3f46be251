"""Embedding throughput: greenfm's ``embed`` path against a plain timm forward loop.

Claim: embedding a cached data set with greenfm costs no more than the shortest
plain timm loop over the same images already in memory (ratio >= 1.0 within the
noise of a shared machine).

greenfm: ``greenfm.engine.embed.embed_dataset`` (what ``greenfm embed`` /
``api.embed`` runs, through ``embed_to_file``, once the model is loaded) on an
``ImageDataset`` read from the decode-once cache: DataLoader (``num_workers=0``,
the verb's default), per-image normalisation, collation, ``inference_mode``,
``forward_features``, ``mean-all-tokens`` pooling, copy into the output array.
Model loading, manifest reading and the Parquet write of the verb are left out.

plain: ``model.eval()``; under ``torch.inference_mode()``,
``model.forward_features(x).mean(1)`` over batches sliced from one preloaded
float32 tensor holding the same normalised images; the vectors are copied to
NumPy. Same timm model object, same batch, CPU fp32, torch's default threads.

Configurations: ViT-S/14 (``vit_small_patch14_reg4_dinov2`` at 224 px, random
init, batch 32) and ``vit_tiny_test`` at 64 px (batch 64), the latter again with one
torch thread (on two busy cores two threads wait on each other at every small op,
which inflates the forward and hides the data path in noise). Images: greenfm CXR
phantoms (128 px) cached under contract ``cxr-medpeft`` in a temporary folder
under /var/tmp. One untimed full batch through each path warms up; then greenfm and plain
each embed the whole set, alternating (A B, B A, ...) because the machine is
shared; the ratio is the median of the per-round ratios greenfm / plain
images/s. Both outputs are checked equal. Each round also times the DataLoader
alone (greenfm's data path, which the plain loop does not have); the ratio it
implies, plain / (plain + data path), is the sharper figure on a busy machine.

    .venv/bin/python benchmarks/bench_embed.py [--rounds N] [--quick] [--only NAME ...]

Prints a table and writes benchmarks/results/embed.json.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from greenfm.data.cache import build_cache
from greenfm.data.contract import get_contract
from greenfm.data.dataset import ImageDataset
from greenfm.data.manifest import load_manifest
from greenfm.data.phantoms import generate_phantoms
from greenfm.engine.embed import embed_dataset
from greenfm.models.backbones import create_encoder

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import command_line, selected_configs, side_by_side_arguments, stamp, write_side_by_side  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "embed.json"
TARGET = 1.0

# batches: full batches per pass over the set; rounds: interleaved greenfm/plain pairs.
# threads: torch threads (None: torch's default, one per core).
CONFIGS = {
    "vit_s14_224": {"backbone": "vit_small_patch14_reg4_dinov2", "img_size": 224, "batch": 32, "batches": 1,
                    "rounds": 3, "threads": None},
    "tiny_64": {"backbone": "vit_tiny_test", "img_size": 64, "batch": 64, "batches": 8, "rounds": 8,
                "threads": None},
    "tiny_64_1thread": {"backbone": "vit_tiny_test", "img_size": 64, "batch": 64, "batches": 8, "rounds": 8,
                        "threads": 1},
    # Not run by default: ViT-S with one thread (less noise than two busy threads give).
    "vit_s14_224_1thread": {"backbone": "vit_small_patch14_reg4_dinov2", "img_size": 224, "batch": 32,
                            "batches": 1, "rounds": 3, "threads": 1},
}
DEFAULT_CONFIGS = ("vit_s14_224", "tiny_64", "tiny_64_1thread")
QUICK = {"vit_s14_224": {"rounds": 2}, "tiny_64": {"rounds": 4}, "tiny_64_1thread": {"rounds": 4},
         "vit_s14_224_1thread": {"rounds": 2}}
DEFAULT_THREADS = torch.get_num_threads()


def run_greenfm(encoder, dataset: ImageDataset, batch: int) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    vectors = embed_dataset(encoder, dataset, batch_size=batch, device="cpu", precision="auto", num_workers=0)
    return time.perf_counter() - start, vectors


def run_loader(dataset: ImageDataset, batch: int) -> float:
    """Seconds to iterate the DataLoader ``embed_dataset`` builds, alone: the greenfm data path."""
    start = time.perf_counter()
    for _ in DataLoader(dataset, batch_size=batch, shuffle=False, num_workers=0):
        pass
    return time.perf_counter() - start


def run_plain(model: torch.nn.Module, images: torch.Tensor, batch: int) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            out.append(model.forward_features(images[i : i + batch]).mean(dim=1).numpy())
    vectors = np.concatenate(out)
    return time.perf_counter() - start, vectors


def measure(name: str, cfg: dict, manifest, work: Path) -> dict:
    old = torch.get_num_threads()
    torch.set_num_threads(cfg["threads"] or DEFAULT_THREADS)
    try:
        return _measure(name, cfg, manifest, work)
    finally:
        torch.set_num_threads(old)


def _measure(name: str, cfg: dict, manifest, work: Path) -> dict:
    n, load_start = cfg["batch"] * cfg["batches"], os.getloadavg()
    if len(manifest) < n:
        raise SystemExit(f"{name}: {len(manifest)} phantom images, {n} needed; raise --patients")
    contract = get_contract("cxr-medpeft", size=cfg["img_size"])
    subset = manifest.subset(np.arange(len(manifest)) < n)
    store = build_cache(subset, contract, work / "cache", workers=1, progress=False)
    dataset = ImageDataset(subset, contract, cache=store, labels=False)
    images = torch.stack([dataset[i]["image"] for i in range(len(dataset))]).contiguous()
    torch.manual_seed(0)
    encoder = create_encoder(cfg["backbone"], img_size=cfg["img_size"])  # random init
    model = encoder.model  # the bare timm module the plain loop drives
    run_plain(model, images[: cfg["batch"]], cfg["batch"])  # warm-up, untimed: one full batch each way
    run_greenfm(encoder, Subset(dataset, range(cfg["batch"])), cfg["batch"])

    runs: dict[str, list[dict]] = {"greenfm": [], "plain": []}
    loads, loader_s, max_diff = [], [], 0.0
    for r in range(cfg["rounds"]):
        loads.append(os.getloadavg()[0])
        outputs = {}
        for variant in (("greenfm", "plain") if r % 2 == 0 else ("plain", "greenfm")):
            if variant == "greenfm":
                seconds, outputs[variant] = run_greenfm(encoder, dataset, cfg["batch"])
            else:
                seconds, outputs[variant] = run_plain(model, images, cfg["batch"])
            runs[variant].append({"images_per_s": n / seconds, "seconds": seconds, "round": r,
                                  "load_average_1min": os.getloadavg()[0]})
            print(f"  [{name}] round {r} {variant:<8}{n / seconds:10.2f} images/s", flush=True)
        max_diff = max(max_diff, float(np.abs(outputs["greenfm"] - outputs["plain"]).max()))
        loader_s.append(run_loader(dataset, cfg["batch"]))
    if max_diff > 1e-4:
        raise SystemExit(f"{name}: greenfm and plain embeddings differ by {max_diff:.3g}")
    g = [x["images_per_s"] for x in runs["greenfm"]]
    p = [x["images_per_s"] for x in runs["plain"]]
    ratios = [a / b for a, b in zip(g, p)]
    plain_s, data_s = n / statistics.median(p), statistics.median(loader_s)
    return {
        "settings": {**cfg, "images": n, "threads": torch.get_num_threads(), "pool": encoder.resolve_pool(None)},
        "load_average_start": load_start, "load_average_end": os.getloadavg(),
        "load_average_1min_per_round": loads, "runs": runs, "max_abs_difference": max_diff,
        "greenfm_images_per_s_median": statistics.median(g), "plain_images_per_s_median": statistics.median(p),
        "ratio_per_round": ratios, "ratio_median": statistics.median(ratios),
        "target_ratio": TARGET, "target_met": statistics.median(ratios) >= TARGET,
        "data_path_s_per_pass": loader_s, "data_path_ms_per_image": 1e3 * data_s / n,
        "ratio_implied_by_data_path": plain_s / (plain_s + data_s),
    }


def main() -> None:
    parser = side_by_side_arguments(__doc__.splitlines()[0], CONFIGS, DEFAULT_CONFIGS,
                                    rounds_help="greenfm/plain pairs (default: see CONFIGS)",
                                    quick_help="fewer images per pass")  # fmt: skip
    args = parser.parse_args()
    configs = selected_configs(args, CONFIGS, QUICK, DEFAULT_CONFIGS)

    started, load_start = time.perf_counter(), os.getloadavg()
    command = command_line("bench_embed.py")
    work = Path(tempfile.mkdtemp(prefix="greenfm-bench-embed-", dir="/var/tmp"))
    try:
        manifest = load_manifest(generate_phantoms(work / "phantoms", n_patients=args.patients, size=128, seed=0))
        results = {}
        for name, cfg in configs.items():
            print(f"{name}: {cfg['backbone']} @ {cfg['img_size']} px, batch {cfg['batch']}, "
                  f"{cfg['batch'] * cfg['batches']} images x {cfg['rounds']} rounds", flush=True)
            results[name] = {**measure(name, cfg, manifest, work), "command": command, "measured_at": stamp()}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    header = (f"{'config':<20}{'threads':>8}{'batch':>6}{'images':>8}{'greenfm img/s':>15}{'plain img/s':>13}"
              f"{'ratio':>7}{'data ms/img':>13}{'implied':>9}   per round")
    print("\n" + header + "\n" + "-" * len(header))
    for name, r in results.items():
        rounds = " ".join(f"{x:.3f}" for x in r["ratio_per_round"])
        print(f"{name:<20}{r['settings']['threads']:>8}{r['settings']['batch']:>6}{r['settings']['images']:>8}"
              f"{r['greenfm_images_per_s_median']:>15.2f}{r['plain_images_per_s_median']:>13.2f}"
              f"{r['ratio_median']:>7.3f}{r['data_path_ms_per_image']:>13.3f}{r['ratio_implied_by_data_path']:>9.3f}"
              f"   {rounds}")
    print(f"ratio = greenfm embed_dataset / plain timm loop images/s, median over interleaved rounds; "
          f"target >= {TARGET}")
    print("data ms/img: the DataLoader over the cached ImageDataset alone (per-image read, normalize, collation), "
          "once per round; implied = plain time / (plain time + that)")

    write_side_by_side(RESULTS, claim="greenfm embed_dataset on a cached ImageDataset >= 1.0x a plain timm forward "
                       "loop's images/s", command=command, results=results, configs=CONFIGS, load_start=load_start,
                       started=started)  # fmt: skip


if __name__ == "__main__":
    main()
