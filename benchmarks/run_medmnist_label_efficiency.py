"""Label efficiency on MedMNIST: linear probe vs LoRA vs full fine-tuning at 1 / 10 / 100% labels.

Claim checked (MED-PEFT, METHODS 6.2): LoRA matches or beats full fine-tuning when
labels are scarce. Three real MedMNIST sets from ../shared/data/medmnist (28 px):

- PneumoniaMNIST: paediatric chest X-ray, pneumonia vs normal (binary);
- RetinaMNIST: colour fundus, binarised to *referable* diabetic retinopathy,
  grade >= 2 vs 0-1 (the 5-grade label is ordinal and tiny at 1%);
- BreastMNIST: breast ultrasound, normal-or-benign vs malignant (binary).

MedMNIST has no patient ids: every image is its own patient, so "patient-grouped"
fractions and the "patient" bootstrap are image-level here. The official
train / val / test splits are kept.

Encoder: greenfm's ``vit_tiny_test`` (patch 8, width 64, depth 4) at 32 px, random
init unless ``--model`` names a run or export folder (e.g. a ``greenfm pretrain``
run). Every fine-tune gets the same step budget (``--max-steps``) and, by default,
one learning rate for LoRA and full (``--lr 1e-3``): MED-PEFT's batch-scaled values
assume a pretrained backbone and barely move a random one in a few hundred steps
(``--lr 0`` keeps greenfm's per-mode defaults).

    .venv/bin/python benchmarks/run_medmnist_label_efficiency.py [--seeds 0 1 2] [--max-steps 200]
        [--datasets pneumonia retina breast] [--work /var/tmp/greenfm_medmnist_le] [--model random]

Seeds run outermost (all data sets for seed 0, then seed 1 ...), so stopping early
leaves whole seeds. Rerunning continues where it stopped (finished cells are kept).
Prints a table and writes benchmarks/results/medmnist_label_efficiency.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch

from bench_common import machine_info, process_cpu_seconds
from greenfm.data.importers import import_source
from greenfm.workflows.label_efficiency import run_label_efficiency

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "medmnist"
RESULTS = ROOT / "benchmarks" / "results" / "medmnist_label_efficiency.json"
DATASETS = {  # name: (file, modality, task description)
    "pneumonia": ("pneumoniamnist_28.npz", "xray", "pneumonia vs normal"),
    "retina": ("retinamnist_28.npz", "fundus", "referable DR (grade >= 2) vs grade 0-1"),
    "breast": ("breastmnist_28.npz", "us", "normal or benign vs malignant"),
}


def manifest_for(name: str, work: Path) -> Path:
    """Import the .npz once (PNG files + manifest); RetinaMNIST is binarised to referable DR."""
    file, _, _ = DATASETS[name]
    imported = work / name / "manifest.csv"
    if not imported.is_file():
        import_source(SHARED / file, imported, kind="medmnist", overwrite=True)
    if name != "retina":
        return imported
    binary = work / name / "referable_dr.csv"
    if not binary.is_file():
        table = pd.read_csv(imported)
        grades = [c for c in table.columns if c.startswith("grade_")]
        table["referable_dr"] = (table["meta_label"] >= 2).astype(int)
        table.drop(columns=grades).to_csv(binary, index=False)
    return binary


def markdown(report: dict) -> str:
    """One table per data set: mode x fraction, mean macro AUROC [mean 95% CI] (seed sd; images)."""
    parts = []
    for name, entry in report["datasets"].items():
        summary = pd.DataFrame(entry["summary"])
        fractions = sorted(summary["fraction"].unique())
        head = "| mode | " + " | ".join(f"{f:.0%}" for f in fractions) + " |"
        lines = [f"**{name}** ({entry['task']}; test {entry['test']['n_images']} images)", "", head,
                 "|---" * (len(fractions) + 1) + "|"]  # fmt: skip
        for mode, curve in summary.groupby("mode", sort=False):
            cells = []
            for f in fractions:
                row = curve[curve["fraction"] == f]
                if row.empty:
                    cells.append("skipped")
                    continue
                r = row.iloc[0]
                sd = f", sd {r['auroc_std']:.3f}" if pd.notna(r["auroc_std"]) else ""
                cells.append(f"{r['auroc_mean']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] "
                             f"(n={r['n_train_images']:.0f}{sd})")  # fmt: skip
            lines.append(f"| {mode} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.01, 0.1, 1.0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--modes", nargs="+", default=["linear", "lora", "full"])
    parser.add_argument("--max-steps", type=int, default=200, help="optimiser steps per fine-tune")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak lr of every fine-tune (0: per-mode defaults)")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--model", default="random", help="random, or a greenfm run / export folder")
    parser.add_argument("--backbone", default="vit_tiny_test")
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/greenfm_medmnist_le"))
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not SHARED.is_dir():
        raise SystemExit(f"{SHARED} is absent: this benchmark needs ../shared/data/medmnist")
    torch.set_num_threads(args.threads)
    tag = ("random" if args.model == "random" else Path(args.model).name) + (f"-lr{args.lr:g}" if args.lr else "")

    report = {
        "claim": "MED-PEFT: LoRA >= full fine-tuning at low label fractions",
        "machine": machine_info(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "datasets": {},
    }  # fmt: skip
    started = time.perf_counter()
    results = {}
    for k in range(1, len(args.seeds) + 1):  # seed by seed: an early stop leaves whole seeds
        for name in args.datasets:
            _, modality, _ = DATASETS[name]
            results[name] = run_label_efficiency(
                model=args.model, backbone=args.backbone, img_size=args.img_size, data=manifest_for(name, args.work),
                out=args.work / name / f"study-{tag}", fractions=args.fractions, seeds=args.seeds[:k],
                modes=args.modes, bootstrap=args.bootstrap, max_steps=args.max_steps, lr=args.lr or None,
                modality=modality, cache=args.work / "cache",
            )  # fmt: skip
    for name, result in results.items():
        _, modality, task = DATASETS[name]
        print(f"\n{name} ({task})\n{result.table()}\n")
        cells = json.loads((result.out / "label_efficiency.json").read_text())
        report["datasets"][name] = {
            "task": task,
            "modality": modality,
            "study": str(result.out),
            "test": cells["test"],
            "cell_seconds_total": sum(c.get("seconds") or 0 for c in cells["cells"].values()),
            "summary": cells["summary"],
            "skipped_cells": cells["skipped_cells"],
        }
    report["wall_seconds_this_session"] = time.perf_counter() - started
    report["cpu_seconds_this_session"] = process_cpu_seconds()
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(report, indent=1) + "\n")
    print(markdown(report))
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
