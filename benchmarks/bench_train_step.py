"""Token-reconstruction training step: greenfm's ``fit`` against a plain PyTorch loop.

Claim: the full greenfm step (engine ``fit`` + ``TokenReconstruction`` on an
``ImageDataset`` read from the decode-once cache; loader, loop, logging and the
compute ledger with codecarbon included, progress bar off) trains at >= 0.95x the
images/s of the shortest plain PyTorch loop doing the same step
(``plain_token_reconstruction_loop.py``: same timm model, same AdamW groups and
hyper-parameters, same grad-norm clip 0.1, same batch, the same images preloaded
as one tensor). Both run on the CPU in fp32 with torch's default threads.

Configurations: ViT-S/14 (``vit_small_patch14_reg4_dinov2``, 224 px, random init,
batch 8) and greenfm's ``vit_tiny_test`` (64 px, batch 32), the latter again with
one torch thread: on two busy cores, two threads wait on each other at every
small op, which hides per-step overheads in noise. ``--only vit_s14_224_1thread``
(not run by default, ~5 min) repeats ViT-S with one thread, batch 4, 3 rounds of
3 measured steps, for a ViT-S ratio with less noise. Images: greenfm CXR
phantoms (128 px), cached under contract ``cxr-medpeft`` at the model's size, in a
temporary folder under /var/tmp. ``fit`` runs with ``num_workers=0`` (the loader
sits on the training thread, so its whole cost is counted) and the TR recipe's
optimisation (``TokenReconstruction.default_train_config()``).

Steady state. Each run trains ``warmup + measured`` steps inside one epoch. For
greenfm, ``fit`` logs a ``metrics.jsonl`` row after every step (``log_every_steps=1``,
10x the default logging) whose ``images_per_s`` is measured since the previous
row (``perf_counter``), so the rows after step ``warmup`` time each later step,
loader, logging and ledger included, and together cover exactly the end of step
``warmup`` to the end of the last step: Fabric and codecarbon start-up, the
once-per-run FLOP count (inside step 1), the final checkpoint and the export are
left out. The plain loop records ``perf_counter`` after every step and uses the
same window. images/s = images in the window / its length. Two further ratios are
less sensitive to other jobs: from the median step, and from the process CPU
seconds per image over the window (for greenfm read in ``fit``'s
``on_after_optimizer_step`` hook by a ``TokenReconstruction`` subclass; the CPU time
of codecarbon's thread counts against greenfm).

What ``fit`` adds, free of compute noise: the same loop runs ``NullMethod`` (one
parameter, the batch mean as loss) for 60 steps with one thread, as ``fit`` on the
cache, ``fit`` on the preloaded tensors and the plain loop (4 interleaved rounds,
median step): cache - memory is the data path (per-image read, ``normalize``,
collation), memory - plain the engine (Fabric, logging, ledger). The ratio these
milliseconds imply, plain step / (plain step + overhead), is reported beside the
timed one; on a busy machine it is the sharper figure.

MFU = images/s x training FLOPs per image / the best fp32 matmul rate (torch.mm,
2048 x 2048, best of 5, default threads) measured in the same run, once per round.
On a shared machine the best call catches a quiet moment that a 10 s step does not,
so the JSON also keeps the mean rate of 3 s of back-to-back matmuls per round and
the plain loop's MFU against its median.
Training FLOPs per image as METHODS section 8 counts them: teacher forward +
3 x (student forward + projector), with ``greenfm.engine.flops.count_forward_flops``
(1 MAC = 2 FLOPs; attention matmuls included).

The machine is shared, so variants alternate (greenfm, plain, then plain, greenfm,
...) and medians are reported; the ratio is the median of the per-round ratios.

    .venv/bin/python benchmarks/bench_train_step.py [--rounds N] [--quick] [--only NAME ...]

Prints a table and writes benchmarks/results/train_step.json.
"""

from __future__ import annotations

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

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from greenfm.config import build_config
from greenfm.data.cache import build_cache
from greenfm.data.contract import get_contract
from greenfm.data.dataset import ImageDataset
from greenfm.data.manifest import load_manifest
from greenfm.data.phantoms import generate_phantoms
from greenfm.engine import TrainConfig, fit, read_metrics
from greenfm.methods.token_reconstruction import TokenReconstruction
from greenfm.models.backbones import create_encoder

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import command_line, selected_configs, side_by_side_arguments, stamp, write_side_by_side  # noqa: E402
from plain_token_reconstruction_loop import PlainTokenReconstruction, adamw, train  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "train_step.json"
TARGET = 0.95
DEFAULT_THREADS = torch.get_num_threads()

# warmup and measured: optimiser steps per run; rounds: interleaved greenfm/plain pairs;
# threads: torch threads for the run (None: torch's default, one per core).
CONFIGS = {
    "vit_s14_224": {"backbone": "vit_small_patch14_reg4_dinov2", "img_size": 224, "batch": 8,
                    "warmup": 1, "measured": 2, "rounds": 3, "threads": None},
    "tiny_64": {"backbone": "vit_tiny_test", "img_size": 64, "batch": 32,
                "warmup": 3, "measured": 6, "rounds": 3, "threads": None},
    "tiny_64_1thread": {"backbone": "vit_tiny_test", "img_size": 64, "batch": 32,
                        "warmup": 3, "measured": 10, "rounds": 4, "threads": 1},
    # Not run by default (about 5 minutes): ViT-S with less noise than two busy threads give.
    "vit_s14_224_1thread": {"backbone": "vit_small_patch14_reg4_dinov2", "img_size": 224, "batch": 4,
                            "warmup": 1, "measured": 3, "rounds": 3, "threads": 1},
}
DEFAULT_CONFIGS = ("vit_s14_224", "tiny_64", "tiny_64_1thread")
QUICK = {"vit_s14_224": {"measured": 1}, "tiny_64": {"measured": 4}, "tiny_64_1thread": {"measured": 6},
         "vit_s14_224_1thread": {"measured": 2, "rounds": 2}}


class ClockedTokenReconstruction(TokenReconstruction):
    """``TokenReconstruction`` that reads the process CPU clock in ``fit``'s after-step hook."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cpu_clock: list[float] = []

    def on_after_optimizer_step(self, step: int) -> None:
        self.cpu_clock.append(time.process_time())


class NullMethod(nn.Module):
    """A step that costs next to nothing (one parameter; the batch mean is the loss), so timing it
    under ``fit`` and under a plain loop shows what each adds around a step, free of compute noise."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(()))

    def training_step(self, batch: dict) -> dict:
        return {"loss": self.weight * batch["image"].mean()}


class InMemory(Dataset):
    """Preloaded images as ``{"image": tensor}`` items: ``fit`` without the cache's data path."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images[index]}


def matmul_rates(n: int = 2048, repeats: int = 5, sustained_s: float = 3.0) -> tuple[float, float]:
    """fp32 FLOP/s of ``torch.mm`` on n x n matrices: the best of ``repeats`` calls (one untimed call
    first), and the mean over ``sustained_s`` seconds of back-to-back calls (what a long step sees
    of a shared machine)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < sustained_s:
        torch.mm(a, b)
        calls += 1
    return 2 * n**3 / best, calls * 2 * n**3 / (time.perf_counter() - start)


def make_dataset(manifest, img_size: int, cache_root: Path) -> ImageDataset:
    contract = get_contract("cxr-medpeft", size=img_size)
    store = build_cache(manifest, contract, cache_root, workers=1, progress=False)
    return ImageDataset(manifest, contract, cache=store, labels=False)


def train_config(cfg: dict, **overrides) -> TrainConfig:
    recipe = TokenReconstruction.default_train_config()
    return build_config(TrainConfig, **{**recipe, "epochs": 1, "max_steps": cfg["warmup"] + cfg["measured"],
                                        "batch_size": cfg["batch"], "num_workers": 0, "progress_bar": False,
                                        "threads": torch.get_num_threads(),  # the thread count set by this benchmark
                                        "log_every_steps": 1, "seed": 0, **overrides})


def run_greenfm(cfg: dict, dataset: ImageDataset, run_dir: Path, flops: float) -> dict:
    """One ``fit``; per-step seconds from the metrics rows after step ``warmup`` (a row per step)."""
    torch.manual_seed(0)
    method = ClockedTokenReconstruction(create_encoder(cfg["backbone"], img_size=cfg["img_size"]))
    start = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):  # the ledger table fit prints at the end
        result = fit(method, dataset, train_config(cfg), run_dir, flops_per_sample=flops, export=False)
    wall = time.perf_counter() - start
    rows = [r for r in read_metrics(run_dir, "step") if r["step"] > cfg["warmup"]]
    assert [r["step"] for r in rows] == list(range(cfg["warmup"] + 1, cfg["warmup"] + cfg["measured"] + 1))
    steps = [cfg["batch"] / r["images_per_s"] for r in rows]  # images_per_s: since the previous row
    cpu = method.cpu_clock[-1] - method.cpu_clock[cfg["warmup"] - 1]
    return {**summary(steps, cpu, cfg["batch"]), "fit_wall_s": wall,
            "ledger_images_per_s": result.compute.get("images_per_s")}


def run_plain(cfg: dict, images: torch.Tensor) -> dict:
    torch.manual_seed(0)
    model = PlainTokenReconstruction(create_encoder(cfg["backbone"], img_size=cfg["img_size"]).model)
    recipe = TokenReconstruction.default_train_config()
    optimizer = adamw(model, lr=recipe["lr"], betas=recipe["betas"], weight_decay=recipe["weight_decay"])
    start = time.perf_counter()
    ends = train(model, optimizer, images, batch_size=cfg["batch"], steps=cfg["warmup"] + cfg["measured"],
                 grad_clip=recipe["grad_clip"])
    window = ends[cfg["warmup"] - 1 :]
    steps = [b[0] - a[0] for a, b in zip(window, window[1:])]
    return {**summary(steps, window[-1][1] - window[0][1], cfg["batch"]), "wall_s": time.perf_counter() - start}


def summary(steps: list[float], cpu_s: float, batch: int) -> dict:
    """images/s over the window (all measured steps), from the median step, and CPU seconds per image."""
    return {"images_per_s": batch * len(steps) / sum(steps),
            "median_step_images_per_s": batch / statistics.median(steps),
            "cpu_s_per_image": cpu_s / (batch * len(steps)), "step_s": steps}


_OVERHEAD: dict[tuple[int, int], dict] = {}


def loop_overhead(cfg: dict, dataset: ImageDataset, images: torch.Tensor, work: Path, *, rounds: int = 4,
                  steps: int = 60) -> dict:
    """Median ms per ``NullMethod`` step: ``fit`` on the cache, ``fit`` on in-memory tensors, the plain loop.

    One torch thread (the work is Python). Epochs are short here, so the median step leaves out the
    steps that carry an epoch boundary. engine = fit on memory - plain; data path = cache - memory.
    """
    variants = {"fit_cache": lambda r: fit_null(cfg, dataset, work / f"null-cache-{r}", steps),
                "fit_memory": lambda r: fit_null(cfg, InMemory(images), work / f"null-memory-{r}", steps),
                "plain": lambda r: plain_null(images, cfg["batch"], steps)}
    times: dict[str, list[float]] = {k: [] for k in variants}
    with threads(1):
        for r in range(rounds):
            for key in list(variants) if r % 2 == 0 else list(variants)[::-1]:
                times[key].append(variants[key](r))
    ms = {k: statistics.median(v) for k, v in times.items()}
    return {"ms_per_step": ms, "ms_per_step_by_round": times, "engine_ms": ms["fit_memory"] - ms["plain"],
            "data_path_ms": ms["fit_cache"] - ms["fit_memory"], "total_ms": ms["fit_cache"] - ms["plain"]}


def fit_null(cfg: dict, data: Dataset, run_dir: Path, steps: int) -> float:
    config = train_config(cfg, epochs=steps, max_steps=steps, checkpoint_every_epochs=None)
    with contextlib.redirect_stderr(io.StringIO()):
        fit(NullMethod(), data, config, run_dir, export=False)
    rows = read_metrics(run_dir, "step")
    shutil.rmtree(run_dir, ignore_errors=True)
    seconds = [(b["samples_seen"] - a["samples_seen"]) / b["images_per_s"] for a, b in zip(rows[4:], rows[5:])]
    return 1e3 * statistics.median(seconds)


def plain_null(images: torch.Tensor, batch: int, steps: int) -> float:
    """The plain loop's body around ``NullMethod``: same AdamW, clip and batch slicing as ``train``."""
    model, recipe = NullMethod(), TokenReconstruction.default_train_config()
    optimizer = adamw(model, lr=recipe["lr"], betas=recipe["betas"], weight_decay=recipe["weight_decay"])
    ends, start = [], 0
    for _ in range(steps):
        start = 0 if start + batch > len(images) else start
        loss = model.training_step({"image": images[start : start + batch]})["loss"]
        start += batch
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(model.parameters()), recipe["grad_clip"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ends.append(time.perf_counter())
    return 1e3 * statistics.median(np.diff(ends[5:]))


@contextlib.contextmanager
def threads(n: int | None):
    """Run the block with ``n`` torch threads (None: torch's default for this machine)."""
    old = torch.get_num_threads()
    torch.set_num_threads(n or DEFAULT_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def measure(name: str, cfg: dict, manifest, work: Path) -> dict:
    with threads(cfg["threads"]):
        return _measure(name, cfg, manifest, work)


def _measure(name: str, cfg: dict, manifest, work: Path) -> dict:
    rounds, load_start = cfg["rounds"], os.getloadavg()
    needed = (cfg["warmup"] + cfg["measured"]) * cfg["batch"]  # every step inside one epoch
    size = max(needed, 12 * cfg["batch"])  # >= 12 steps per epoch for the NullMethod runs
    if len(manifest) < size:
        raise SystemExit(f"{name}: {len(manifest)} phantom images, {size} needed; raise --patients")
    dataset = make_dataset(manifest.subset(np.arange(len(manifest)) < size), cfg["img_size"], work / "cache")
    images = torch.stack([dataset[i]["image"] for i in range(len(dataset))]).contiguous()
    probe = TokenReconstruction(create_encoder(cfg["backbone"], img_size=cfg["img_size"]))
    flops, convention = probe.training_flops_per_sample({"image": dataset[0]["image"].unsqueeze(0)})
    del probe
    runs: dict[str, list[dict]] = {"greenfm": [], "plain": []}
    matmul, sustained, loads = [], [], []
    for r in range(rounds):
        with threads(None):
            best, mean = matmul_rates()
        matmul.append(best)
        sustained.append(mean)
        loads.append(os.getloadavg()[0])
        order = ("greenfm", "plain") if r % 2 == 0 else ("plain", "greenfm")
        for variant in order:
            if variant == "greenfm":
                out = run_greenfm(cfg, dataset, work / f"run-{name}-{r}", flops)
                shutil.rmtree(work / f"run-{name}-{r}", ignore_errors=True)
            else:
                out = run_plain(cfg, images)
            runs[variant].append({**out, "round": r, "load_average_1min": os.getloadavg()[0]})
            print(f"  [{name}] round {r} {variant:<8}{out['images_per_s']:9.2f} images/s", flush=True)
    key = (cfg["img_size"], cfg["batch"])
    if key not in _OVERHEAD:  # the same for every thread setting: it is measured with one thread
        _OVERHEAD[key] = loop_overhead(cfg, dataset, images, work)
    overhead = _OVERHEAD[key]
    print(f"  [{name}] fit adds {overhead['total_ms']:.2f} ms per step around a one-parameter method "
          f"(engine {overhead['engine_ms']:.2f}, data path {overhead['data_path_ms']:.2f})", flush=True)
    plain_step_s = statistics.median(s for x in runs["plain"] for s in x["step_s"])
    best_mm = max(matmul)
    g = [x["images_per_s"] for x in runs["greenfm"]]
    p = [x["images_per_s"] for x in runs["plain"]]
    ratios = [a / b for a, b in zip(g, p)]
    step_ratios = [a["median_step_images_per_s"] / b["median_step_images_per_s"]
                   for a, b in zip(runs["greenfm"], runs["plain"])]
    cpu_ratios = [b["cpu_s_per_image"] / a["cpu_s_per_image"] for a, b in zip(runs["greenfm"], runs["plain"])]
    median_g, median_p = statistics.median(g), statistics.median(p)
    return {
        "settings": {**cfg, "images_in_epoch": len(dataset), "threads": torch.get_num_threads()},
        "load_average_start": load_start, "load_average_end": os.getloadavg(),
        "training_flops_per_image": flops, "flops_convention": convention,
        "matmul_flops_per_s": matmul, "best_matmul_flops_per_s": best_mm,
        "sustained_matmul_flops_per_s": sustained,
        "load_average_1min_per_round": loads,
        "runs": runs,
        "greenfm_images_per_s_median": median_g, "plain_images_per_s_median": median_p,
        "ratio_per_round": ratios, "ratio_median": statistics.median(ratios),
        "median_step_ratio_per_round": step_ratios, "median_step_ratio_median": statistics.median(step_ratios),
        "cpu_ratio_per_round": cpu_ratios, "cpu_ratio_median": statistics.median(cpu_ratios),
        "greenfm_mfu": median_g * flops / best_mm, "plain_mfu": median_p * flops / best_mm,
        "plain_mfu_vs_median_sustained_matmul": median_p * flops / statistics.median(sustained),
        "target_ratio": TARGET, "target_met": statistics.median(ratios) >= TARGET,
        "loop_overhead": overhead, "plain_median_step_s": plain_step_s,
        "ratio_implied_by_overhead": plain_step_s / (plain_step_s + overhead["total_ms"] / 1e3),
    }


def main() -> None:
    parser = side_by_side_arguments(__doc__.splitlines()[0], CONFIGS, DEFAULT_CONFIGS,
                                    rounds_help="greenfm/plain pairs per configuration (default: see CONFIGS)",
                                    quick_help="fewer measured steps")  # fmt: skip
    args = parser.parse_args()
    logging.getLogger("greenfm").setLevel(logging.ERROR)  # the random-init teacher warning, once per run
    configs = selected_configs(args, CONFIGS, QUICK, DEFAULT_CONFIGS)

    started, load_start = time.perf_counter(), os.getloadavg()
    command = command_line("bench_train_step.py")
    work = Path(tempfile.mkdtemp(prefix="greenfm-bench-train-step-", dir="/var/tmp"))
    try:
        manifest = load_manifest(generate_phantoms(work / "phantoms", n_patients=args.patients, size=128, seed=0))
        results = {}
        for name, cfg in configs.items():
            print(f"{name}: {cfg['backbone']} @ {cfg['img_size']} px, batch {cfg['batch']}, "
                  f"{cfg['warmup']} + {cfg['measured']} steps x {cfg['rounds']} rounds", flush=True)
            results[name] = {**measure(name, cfg, manifest, work), "command": command, "measured_at": stamp()}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    header = (f"{'config':<17}{'threads':>8}{'batch':>6}{'GFLOP/img':>10}{'greenfm img/s':>15}{'plain img/s':>13}"
              f"{'ratio':>7}{'median-step':>12}{'CPU-time':>10}{'MFU greenfm':>13}{'MFU plain':>11}")
    print("\n" + header + "\n" + "-" * len(header))
    for name, r in results.items():
        print(f"{name:<17}{r['settings']['threads']:>8}{r['settings']['batch']:>6}"
              f"{r['training_flops_per_image'] / 1e9:>10.3f}{r['greenfm_images_per_s_median']:>15.2f}"
              f"{r['plain_images_per_s_median']:>13.2f}{r['ratio_median']:>7.3f}{r['median_step_ratio_median']:>12.3f}"
              f"{r['cpu_ratio_median']:>10.3f}{r['greenfm_mfu']:>13.3f}{r['plain_mfu']:>11.3f}")
    print(f"ratios greenfm / plain, medians over interleaved rounds (target >= {TARGET}): images/s over the window, "
          "from the median step, and from CPU seconds per image")
    header = (f"\n{'what fit adds per step':<24}{'engine ms':>10}{'data path ms':>14}{'total ms':>10}"
              f"{'plain step s':>14}{'implied ratio':>15}")
    print(header + "\n" + "-" * (len(header) - 1))
    for name, r in results.items():
        o = r["loop_overhead"]
        print(f"{name:<24}{o['engine_ms']:>10.2f}{o['data_path_ms']:>14.2f}{o['total_ms']:>10.2f}"
              f"{r['plain_median_step_s']:>14.3f}{r['ratio_implied_by_overhead']:>15.3f}")
    print("one-parameter method, one thread, same batch and data: fit on the cache - fit on in-memory tensors "
          "(data path), fit on in-memory tensors - plain loop (engine); "
          "implied ratio = plain step / (plain step + total)")
    print("MFU over the best fp32 matmul: " + ", ".join(
        f"{name} {r['best_matmul_flops_per_s'] / 1e9:.1f} GFLOP/s" for name, r in results.items()))

    write_side_by_side(RESULTS, claim=f"greenfm fit (TokenReconstruction, cached ImageDataset) >= {TARGET}x a plain "
                       "PyTorch loop's images/s", command=command, results=results, configs=CONFIGS,
                       load_start=load_start, started=started)  # fmt: skip


if __name__ == "__main__":
    main()
