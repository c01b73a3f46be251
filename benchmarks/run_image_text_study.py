"""Does UniCL (reports + labels) beat CLIP (reports only) here? Zero-shot and retrieval, paired.

Question (METHODS 5; the scaling paper's ordering "UniCL >= CLIP at matched n and steps"):
with the same image and text towers, init, data, optimiser steps and batch, is the
``unicl`` recipe's zero-shot macro AUROC at least ``clip``'s, and how do both retrieve?

Data sets:

- ``phantoms``: greenfm chest-radiograph phantoms of site A (``--patients``, 64 px), split
  by patient (val 0.1, test 0.3); reports and five findings from the generator.
- ``covid_notes``: ``../shared/data/covid_cxr_notes`` (295 radiographs of 149 patients), the
  clinical notes as text, findings from greenfm's rule labeler (``chexpert14``), split by
  patient (test 0.3). Skipped when the folder is absent.

Towers: image ``vit_tiny_test`` at 64 px from one random init (torch seed 0); text: the
offline MiniLM (all-MiniLM-L6-v2), locked (``lock_text``, LiT-style: each distinct text is
encoded once; only the image tower, the projections and the temperature train), mean
pooled, 128 tokens. Optimisation for a short CPU run: AdamW lr 1e-3, wd 0.05, batch 64,
cosine per step with 10 warm-up steps, ``--steps`` steps for both recipes. UniCL: METHODS
defaults (``p_label_text`` 0.5, ``label_text_mode`` whole) unless ``--label-text-mode``.

Evaluation on the test split: zero-shot with GreenRFM's default prompts (p3, "There is
{p}." / "There is no {p}."), per-finding and macro AUROC with 1,000 patient-bootstrap
resamples; the paired difference UniCL - CLIP on the same resamples
(``greenfm.evaluate.paired``); retrieval R@K (image -> text over de-duplicated reports)
beside the random baseline.

    .venv/bin/python benchmarks/run_image_text_study.py [--steps 150] [--patients 600] [--only phantoms]

Prints a table and writes benchmarks/results/image_text_study.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import command_line, machine_info  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "image_text_study.json"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "covid_cxr_notes"


def phantom_manifest(root: Path, patients: int) -> Path:
    from greenfm.data.phantoms import generate_phantoms
    from greenfm.data.splits import split_manifest

    source = generate_phantoms(root / "phantoms", n_patients=patients, size=64, seed=11, site="A")
    split_manifest(source, root / "phantoms_split.csv", val=0.1, test=0.3, seed=0)
    return root / "phantoms_split.csv"


def data_sets(work: Path, only: list[str] | None, phantoms) -> dict[str, Path]:
    """The study's data sets by name: ``phantoms()`` and the clinical-notes set (when present), or ``only`` those."""
    sets = {}
    if not only or "phantoms" in only:
        sets["phantoms"] = phantoms()
    if not only or "covid_notes" in only:
        covid = covid_manifest(work)
        if covid is not None:
            sets["covid_notes"] = covid
    return sets


def covid_manifest(root: Path) -> Path | None:
    if not SHARED.is_dir():
        print(f"skipping covid_notes: {SHARED} is absent")
        return None
    from greenfm.data.splits import split_manifest
    from greenfm.labeling import label_manifest

    meta = pd.read_csv(SHARED / "metadata.csv")
    table = pd.DataFrame({"path": [str(SHARED / f) for f in meta["filename"]], "patient_id": meta["patient_id"].astype(str),
                          "report": meta["clinical_notes"].fillna("").astype(str)})  # fmt: skip
    table = table[table["report"].str.strip().str.len() > 0]
    raw = root / "covid_reports.csv"
    table.to_csv(raw, index=False)
    label_manifest(raw, root / "covid_labeled.csv", vocab="chexpert14", engine="rules", overwrite=True)
    split_manifest(root / "covid_labeled.csv", root / "covid_split.csv", val=0.0, test=0.3, seed=0)
    return root / "covid_split.csv"


def train(recipe: str, data: Path, out: Path, args: argparse.Namespace, cache: Path) -> dict:
    from greenfm.workflows.pretrain import PretrainConfig, run_pretrain

    method = {"lock_text": True, "embed_dim": 128}
    if recipe == "unicl":
        method["label_text_mode"] = args.label_text_mode
    train_options = {"max_steps": args.steps, "epochs": 1000, "batch_size": 64, "lr": 1e-3, "weight_decay": 0.05,
                     "warmup": 10, "num_workers": 0, "seed": 0, "progress_bar": False, "show_ledger": False,
                     "checkpoint_every_epochs": None, "accelerator": "cpu"}  # fmt: skip
    config = PretrainConfig(recipe=recipe, data=str(data), backbone="vit_tiny_test", img_size=64, init="random",
                            contract="cxr-medpeft", augment="none", cache=str(cache), method=method,
                            train=train_options)  # fmt: skip
    ledger_file = out / "compute.json"
    if (out / "exported" / "config.json").is_file() and ledger_file.is_file() and \
            json.loads(ledger_file.read_text()).get("optimizer_steps") == args.steps:  # --keep: reuse the run
        ledger = json.loads(ledger_file.read_text())
        return {"wall_s": ledger.get("wall_time_s"), "steps": ledger.get("optimizer_steps"),
                "samples_seen": ledger.get("samples_seen"), "final_loss": None,
                "training_flops": ledger.get("total_training_flops"), "reused": True}  # fmt: skip
    tic = time.perf_counter()
    result = run_pretrain(config, out)
    return {"wall_s": time.perf_counter() - tic, "steps": result.steps, "samples_seen": result.samples_seen,
            "final_loss": result.history[-1].get("loss") if result.history else None,
            "training_flops": result.compute.get("total_training_flops")}  # fmt: skip


def evaluate(run: Path, data: Path, out: Path, cache: Path) -> dict:
    from greenfm.workflows.image_text_config import RetrieveConfig, ZeroshotConfig
    from greenfm.workflows.image_text_eval import run_retrieve, run_zeroshot

    zs = run_zeroshot(ZeroshotConfig(model=str(run), data=str(data), cache=str(cache)), out / "zeroshot")["metrics"]
    rt = run_retrieve(RetrieveConfig(model=str(run), data=str(data), cache=str(cache)), out / "retrieval")["result"]
    return {
        "zeroshot_macro_auroc": zs.macro_auroc, "zeroshot_macro_ci": zs.macro_auroc_ci,
        "findings_scored": f"{zs.n_evaluable} of {zs.n_classes}",
        "per_finding": {f.name: {"auroc": f.auroc, "ci": f.auroc_ci, "n_positive": f.n_positive, "skipped": f.skipped}
                        for f in zs.findings},
        "i2t_recall": {str(r["k_used"]): [r["recall"], r["random"]] for r in rt["image_to_text"]["recall"]},
        "i2t_mean_rank": [rt["image_to_text"]["mean_rank"], rt["image_to_text"]["random_mean_rank"]],
        "n_test_images": rt["n_images"], "n_unique_texts": rt["n_unique_texts"],
    }  # fmt: skip


def paired(a: Path, b: Path) -> dict:
    from greenfm.evaluate.paired import paired_comparison

    result = paired_comparison(pd.read_parquet(a / "zeroshot" / "predictions.parquet"),
                               pd.read_parquet(b / "zeroshot" / "predictions.parquet"),
                               model_a="clip", model_b="unicl", wilcoxon=False)  # fmt: skip
    macro = result.rows[-1]
    return {"macro_difference": macro.difference, "macro_difference_ci": macro.difference_ci,
            "verdict": macro.verdict.replace("b better", "unicl better").replace("a better", "clip better"),
            "per_finding": {r.name: [r.difference, r.difference_ci] for r in result.rows[:-1]}}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--patients", type=int, default=600)
    parser.add_argument("--label-text-mode", choices=["whole", "per_finding"], default="whole")
    parser.add_argument("--only", choices=["phantoms", "covid_notes"], action="append")
    parser.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temporary one)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)
    started = time.perf_counter()
    results: dict = {}
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        cache = work / "cache"
        sets = data_sets(work, args.only, lambda: phantom_manifest(work, args.patients))
        for name, data in sets.items():
            results[name] = {}
            for recipe in ("clip", "unicl"):
                run = work / name / recipe
                results[name][recipe] = {"training": train(recipe, data, run, args, cache),
                                         **evaluate(run, data, run / "eval", cache)}  # fmt: skip
            results[name]["unicl_minus_clip"] = paired(work / name / "clip" / "eval", work / name / "unicl" / "eval")
    print(f"\n{'data':12} {'recipe':6} {'zero-shot macro AUROC [95% CI]':32} {'R@1 (random)':16} {'R@10 (random)':16}")
    for name, by_recipe in results.items():
        for recipe in ("clip", "unicl"):
            r = by_recipe[recipe]
            ci = r["zeroshot_macro_ci"]
            macro = f"{r['zeroshot_macro_auroc']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "n/a"
            r1, r10 = r["i2t_recall"].get("1"), r["i2t_recall"].get("10")
            print(f"{name:12} {recipe:6} {macro:32} {r1[0]:.3f} ({r1[1]:.3f})   {r10[0]:.3f} ({r10[1]:.3f})")
        d = by_recipe["unicl_minus_clip"]
        ci = d["macro_difference_ci"]
        print(f"{name:12} UniCL - CLIP macro AUROC {d['macro_difference']:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]: {d['verdict']}")
    earlier = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    runs = {**earlier.get("runs", {}), **{name: {"command": command_line(Path(__file__).name), "steps": args.steps,
                                                 "patients": args.patients, "label_text_mode": args.label_text_mode}
                                          for name in results}}  # fmt: skip
    out = {"runs": runs, "results": {**earlier.get("results", {}), **results},
           "machine": machine_info(), "total_wall_s": round(time.perf_counter() - started, 1)}  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(f"wrote {RESULTS} ({out['total_wall_s']:.0f} s; data sets not run this time are kept from earlier runs)")


if __name__ == "__main__":
    main()
