"""Does token-reconstruction pretraining help on real MedMNIST images? Paired label-efficiency studies.

Question (issue: label-efficient adaptation, "the effect of token-reconstruction
pretraining"): continual pretraining by token reconstruction (METHODS section 2) on a
data set's own unlabelled training images, then the same label-efficiency study as
``run_medmnist_label_efficiency.py`` (linear probe / LoRA / full fine-tuning at 1 / 10 /
100% labels, 3 seeds). Is the adapted model better than the model it started from?

Starting models (no pretrained weights can be downloaded here):

- ``phantom``: the demo's general-domain stand-in, a ``vit_tiny_test`` (32 px) trained
  with labels on 800 synthetic chest-radiograph phantoms of site A
  (``greenfm.workflows.demo_stages.starting_model``, the full demo's setting). It has
  never seen a MedMNIST image. This is the arm that matches RETFound-Green's setting
  (a pretrained general model, adapted without labels).
- ``random``: one random init (torch seed 0), exported so that the study and the
  pretraining start from the same weights. METHODS 2.5: a random teacher makes the
  objective degenerate; this arm checks what the recipe does then. Linear probe only.

Token reconstruction: METHODS objective defaults (noise 0.2 x std, mask ratio U(0, 1/3),
last sample clean, zero mask token, LayerScale projector), AdamW betas (0.9, 0.99), wd
1e-4, clip 0.1; for a short CPU run lr 1e-3 (recipe 5e-5), batch 64, ``--tr-steps``
optimiser steps in whole epochs, cosine per step with 10% warm-up; augmentation by
modality (chest X-ray preset, RETFound-Green's for fundus, none for ultrasound). Only
the training split is used: val and test images are never seen.

Each pair of studies (start, start + TR) uses the same manifest and seeds, so every
cell trains on the same patients; ``greenfm.workflows.study_comparison`` pairs their
test predictions on 1,000 shared resamples and reports B - A with a 95% CI.

    .venv/bin/python benchmarks/run_medmnist_token_reconstruction.py \
        [--stage all|prepare|study|compare] [--arm phantom phantom+tr random random+tr] \
        [--datasets pneumonia retina breast] [--work /var/tmp/greenfm_medmnist_tr]

Every stage reuses finished work (runs, study cells). ``--stage study --arm ...`` in two
processes runs the studies in parallel after ``--stage prepare``. Writes
benchmarks/results/medmnist_token_reconstruction.json and prints the comparison tables.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import torch
from rich.console import Console

from bench_common import machine_info, process_cpu_seconds
from run_medmnist_label_efficiency import DATASETS, SHARED, manifest_for

from greenfm.data.manifest import load_manifest
from greenfm.workflows.label_efficiency import run_label_efficiency
from greenfm.workflows.study_comparison import compare_studies

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "medmnist_token_reconstruction.json"
ARMS = {  # name: (start, pretrained with TR?, modes)
    "phantom": ("phantom", False, ("linear", "lora", "full")),
    "phantom+tr": ("phantom", True, ("linear", "lora", "full")),
    "random": ("random", False, ("linear",)),
    "random+tr": ("random", True, ("linear",)),
}
PAIRS = (("phantom", "phantom+tr"), ("random", "random+tr"))


def starting_models(work: Path, console: Console) -> dict[str, Path]:
    """The phantom warm start (the full demo's recipe; its target site is not used) and the random init."""
    from greenfm.models import create_encoder, export_encoder
    from greenfm.workflows.demo import FULL
    from greenfm.workflows.demo_stages import make_data, split_and_cache, starting_model

    setting = replace(FULL, name="medmnist-start", target_patients=40, test=0.25)  # the target is never used
    root = work / "phantom_start"
    data = split_and_cache(root, make_data(root, setting, console), setting, console)
    phantom, _ = starting_model(root, data, setting, console)
    random_init = work / "random_init"
    if not (random_init / "config.json").is_file():
        torch.manual_seed(0)
        export_encoder(create_encoder("vit_tiny_test", img_size=32), random_init)
    return {"phantom": phantom / "exported", "random": random_init}


def token_reconstruction(start: Path, name: str, dataset: str, work: Path, steps: int) -> Path:
    """TR on the data set's training split from ``start``; reused when its export exists."""
    from greenfm.workflows.pretrain import PretrainConfig, run_pretrain

    run = work / dataset / f"tr-from-{name}"
    if (run / "exported" / "config.json").is_file():
        return run
    manifest = load_manifest(manifest_for(dataset, work))
    n_train = int((manifest.table["split"] == "train").sum())
    batch = 64
    epochs = math.ceil(steps / math.ceil(n_train / batch))
    total = epochs * math.ceil(n_train / batch)
    train = {"epochs": epochs, "batch_size": batch, "lr": 1e-3, "schedule_interval": "step", "t_initial": None,
             "warmup": max(1, total // 10), "checkpoint_every_epochs": None, "num_workers": 0, "accelerator": "cpu",
             "seed": 0, "track_energy": False, "log_every_steps": 20, "progress_bar": False}  # fmt: skip
    config = PretrainConfig(recipe="token-reconstruction", data=str(manifest_for(dataset, work)), init=str(start),
                            contract="rfg", modality=DATASETS[dataset][1], splits=["train"],
                            cache=str(work / "cache"), train=train)  # fmt: skip
    run_pretrain(config, run)
    return run


def model_of(arm: str, dataset: str, work: Path, starts: dict[str, Path], steps: int) -> Path:
    start, pretrained, _ = ARMS[arm]
    return token_reconstruction(starts[start], start, dataset, work, steps) if pretrained else starts[start]


def study(arm: str, dataset: str, model: Path, args) -> Path:
    out = args.work / dataset / f"study-{arm}"
    run_label_efficiency(
        model=str(model), data=manifest_for(dataset, args.work), out=out, fractions=args.fractions, seeds=args.seeds,
        modes=ARMS[arm][2], bootstrap=1000, max_steps=args.max_steps, lr=1e-3, modality=DATASETS[dataset][1],
        contract="rfg", cache=args.work / "cache",
    )  # fmt: skip
    return out


def markdown(report: dict) -> str:
    """One table per data set: mode x fraction, both models' mean macro AUROC and the paired difference."""
    parts = []
    for name, entry in report["datasets"].items():
        lines = [f"**{name}** ({entry['task']})", "",
                 "| start | mode | fraction (images) | start AUROC | + TR AUROC | difference [paired 95% CI] | seed sd | verdict |",
                 "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for comparison in entry["comparisons"].values():
            for r in comparison["rows"]:
                low, high = r["difference_ci"] or (float("nan"), float("nan"))
                sd = f"{r['seed_sd']:.3f}" if r["seed_sd"] is not None else ""
                lines.append(f"| {comparison['name_a']} | {r['mode']} | {r['fraction']:g} ({r['n_train_images']:.0f}) | "
                             f"{r['auroc_a']:.3f} | {r['auroc_b']:.3f} | {r['difference']:+.3f} [{low:+.3f}, {high:+.3f}] | "
                             f"{sd} | {r['verdict'].replace('b better', 'TR better').replace('a better', 'start better')} |")  # fmt: skip
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", default="all", choices=["all", "prepare", "study", "compare"])
    parser.add_argument("--arm", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.01, 0.1, 1.0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--max-steps", type=int, default=200, help="optimiser steps per fine-tune")
    parser.add_argument("--tr-steps", type=int, default=500, help="token-reconstruction steps (whole epochs)")
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/greenfm_medmnist_tr"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not SHARED.is_dir():
        raise SystemExit(f"{SHARED} is absent: this benchmark needs ../shared/data/medmnist")
    torch.set_num_threads(args.threads)
    console = Console()
    started = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)

    starts = starting_models(args.work, console)
    if args.stage in ("all", "prepare"):
        for dataset in args.datasets:
            for start in starts:
                token_reconstruction(starts[start], start, dataset, args.work, args.tr_steps)
    if args.stage in ("all", "study"):
        for dataset in args.datasets:
            for arm in args.arm:
                study(arm, dataset, model_of(arm, dataset, args.work, starts, args.tr_steps), args)
    if args.stage not in ("all", "compare"):
        return

    report = {"question": "does token reconstruction on a data set's unlabelled train images improve its start?",
              "machine": machine_info(),
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "datasets": {}}  # fmt: skip
    for dataset in args.datasets:
        entry = report["datasets"][dataset] = {"task": DATASETS[dataset][2], "comparisons": {}, "pretraining": {}}
        for start in starts:
            run = args.work / dataset / f"tr-from-{start}"
            compute = json.loads((run / "compute.json").read_text())
            history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
            losses = [r["loss"] for r in history if r.get("type") == "epoch" and "loss" in r]
            entry["pretraining"][start] = {"run": str(run), "wall_s": compute.get("wall_time_s"),
                                           "steps": compute.get("optimizer_steps"),
                                           "images": compute.get("dataset_size"),
                                           "epoch_losses": losses}  # fmt: skip
        for a, b in PAIRS:
            folders = [args.work / dataset / f"study-{arm}" for arm in (a, b)]
            if not all((f / "label_efficiency.json").is_file() for f in folders):
                continue
            comparison = compare_studies(*folders, name_a=a, name_b=b)
            comparison.save(args.work / dataset / f"compare-{a}-vs-{b}")
            console.print(f"\n[bold]{dataset}[/bold] ({DATASETS[dataset][2]})")
            console.print(comparison.table(), markup=False, highlight=False, soft_wrap=True)
            entry["comparisons"][f"{b} vs {a}"] = comparison.to_dict()
    report["wall_seconds_this_session"] = time.perf_counter() - started
    report["cpu_seconds_this_session"] = process_cpu_seconds()
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(report, indent=1) + "\n")
    console.print(markdown(report), markup=False, highlight=False, soft_wrap=True)
    console.print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
