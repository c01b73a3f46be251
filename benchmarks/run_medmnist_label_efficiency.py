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
run). Every fine-tune gets the same step budget (``--max-steps``).

    .venv/bin/python benchmarks/run_medmnist_label_efficiency.py [--seeds 0 1] [--max-steps 200]
        [--datasets pneumonia retina breast] [--work /var/tmp/greenfm_medmnist_le] [--model random]

Rerunning continues where it stopped (finished cells are kept). Prints a table and
writes benchmarks/results/medmnist_label_efficiency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import pandas as pd
import torch

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.01, 0.1, 1.0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--modes", nargs="+", default=["linear", "lora", "full"])
    parser.add_argument("--max-steps", type=int, default=200, help="optimiser steps per fine-tune")
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
    tag = "random" if args.model == "random" else Path(args.model).name

    report = {
        "claim": "MED-PEFT: LoRA >= full fine-tuning at low label fractions",
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch_threads": args.threads, "python": platform.python_version(), "torch": torch.__version__},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "datasets": {},
    }  # fmt: skip
    started = time.perf_counter()
    for name in args.datasets:
        _, modality, task = DATASETS[name]
        tic = time.perf_counter()
        result = run_label_efficiency(
            model=args.model, backbone=args.backbone, img_size=args.img_size, data=manifest_for(name, args.work),
            out=args.work / name / f"study-{tag}", fractions=args.fractions, seeds=args.seeds, modes=args.modes,
            bootstrap=args.bootstrap, max_steps=args.max_steps, modality=modality, cache=args.work / "cache",
        )  # fmt: skip
        seconds = time.perf_counter() - tic
        print(f"\n{name} ({task}), {seconds:.0f} s this session\n{result.table()}\n")
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
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
