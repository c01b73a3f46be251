"""Data-scaling studies (METHODS 5.3): UniCL vs CLIP vs token reconstruction across n at equal steps.

Question: on nested, patient-closed subsets trained with the same optimiser steps and batch
from one init, do the orderings METHODS 5.3 expects hold here, each read from a paired
patient-bootstrap CI?

1. metrics non-decreasing in n (each size against the next smaller one);
2. UniCL (reports + labels) >= CLIP (reports only) at matched n and steps;
3. the model at the smallest in-domain n >= its init on in-domain findings.

Data sets:

- ``phantoms``: greenfm chest-radiograph phantoms (64 px, site A, ``--patients``, seed 11),
  split by patient; the subsets come from its train split. The evaluations use a separate
  phantom set of the same site (``--eval-patients``, seed 12, split val 0.1 / test 0.3), so
  their cost does not grow with the training pool; reports and five findings from the
  generator.
- ``pneumonia``: ``../shared/data/medmnist/pneumoniamnist_28.npz`` (its own splits; each
  image is its own patient), label-only: template reports from the labels
  (``--text-from-labels``). Skipped when the file is absent.

Towers: image ``vit_tiny_test`` at 64 px (pneumonia: 32 px) from one random init (seed 0),
exported once per recipe and shared by every size; text: a small random BERT (2 layers,
width 32) with a WordPiece vocabulary fitted to the study's texts (MiniLM is too slow for
hundreds of CPU steps per cell on a shared 2-core machine), trained with the image tower;
64-d shared space. Every cell: ``--steps`` AdamW steps of batch 64, lr 1e-3,
wd 0.05, cosine per step with the recipe's warm-up, contract ``cxr-medpeft``, no augmentation.
Token reconstruction from a random init distils towards a random teacher (METHODS 2.5: a
degenerate objective); it is run for the image-only curve, not as a model worth having.

Evaluations (the same for every cell and the init): the RETFound-Green linear probe
(fit on the evaluation set's train split, test macro AUROC)
and zero-shot (prompts p3) for the image-text recipes; 1,000 patient-bootstrap resamples.

    .venv/bin/python benchmarks/run_scaling_study.py [--only phantoms] [--steps 150] [--patients 18400]

Prints the tables and writes benchmarks/results/scaling_study.json (the studies themselves go
to ``--work``, default a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import command_line, machine_info  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "scaling_study.json"
PNEUMONIA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "medmnist" / "pneumoniamnist_28.npz"
RECIPES = ["unicl", "clip", "token-reconstruction"]


def phantom_manifest(root: Path, patients: int, *, name: str = "phantoms", seed: int = 11, test: float = 0.2) -> Path:
    from greenfm.data.phantoms import generate_phantoms
    from greenfm.data.splits import split_manifest

    path = root / f"{name}_split.csv"
    if not path.is_file():
        source = generate_phantoms(root / name, n_patients=patients, size=64, seed=seed, site="A", workers=2)
        split_manifest(source, path, val=0.1, test=test, seed=0)
    return path


def pneumonia_manifest(root: Path) -> Path | None:
    from greenfm.data.importers import import_source

    if not PNEUMONIA.is_file():
        print(f"skipping pneumonia: {PNEUMONIA} not found")
        return None
    path = root / "pneumonia.csv"
    if not path.is_file():
        import_source(PNEUMONIA, path)
    return path


def text_tower(data: Path, folder: Path, from_labels: bool) -> Path:
    """A small random BERT with a WordPiece vocabulary fitted to the study's texts (reports, or the
    template reports of a label-only set, and the zero-shot prompts)."""
    import pandas as pd

    from greenfm.data.manifest import load_manifest
    from greenfm.labeling.templates import synthesize_reports
    from greenfm.models.text_tiny import tiny_text_tower

    if (folder / "greenfm_text.json").is_file():
        return folder
    manifest = load_manifest(data, check_files=False)
    if from_labels:
        texts = []
        for vocab in ("chexpert14", "nih14"):
            texts += synthesize_reports(manifest.table, vocab)
    else:
        texts = pd.Series(manifest.table["report"]).dropna().astype(str).tolist()
    texts += [f"There is {p}." for p in manifest.findings] + [f"There is no {p}." for p in manifest.findings]
    return tiny_text_tower(texts, max_length=64).save(folder)


def study(name: str, data: Path, work: Path, args: argparse.Namespace, *, sizes: list[int], img_size: int,
          text_from_labels: bool, eval_data: Path | None = None) -> dict:  # fmt: skip
    from greenfm.workflows.scaling import run_scaling
    from greenfm.workflows.scaling_config import ScalingConfig

    image_text = {"embed_dim": 64}
    config = ScalingConfig(
        recipe=args.recipes, data=str(data), eval_data=str(eval_data) if eval_data else None, sizes=sizes, steps=args.steps, eval=["probe", "zeroshot"],
        probe_train_images=args.probe_images, init="random", backbone="vit_tiny_test", img_size=img_size,
        contract="cxr-medpeft", augment="none", text_from_labels=text_from_labels, cache=str(work / "cache"),
        text_tower=str(text_tower(data, work / f"{name}_text", text_from_labels)),
        method={"unicl": image_text, "clip": image_text, "token-reconstruction": {}},
        train={"batch_size": 64, "lr": 1e-3, "weight_decay": 0.05, "track_energy": False},
        bootstrap=1000, fit_resamples=200,
    )  # fmt: skip
    started = time.perf_counter()
    summary = run_scaling(config, work / f"study_{name}", echo=lambda line: print(line, flush=True))
    return {"data": str(data), "eval_data": str(eval_data or data), "sizes_asked": sizes, "steps": args.steps, "batch_size": 64,
            "seconds": time.perf_counter() - started, "subsets": summary["subsets"], "notes": summary["notes"],
            "points": summary["points"], "fits": summary["fits"], "orderings": summary["orderings"],
            "pairs": [p for p in summary["pairs"] if p["kind"] == "recipes"], "table": summary["table"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["phantoms", "pneumonia"], default=None)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--patients", type=int, default=18400, help="phantom patients (about 2.5 images each)")
    parser.add_argument("--phantom-sizes", default="500,1000,2000,8000,32000")
    parser.add_argument("--pneumonia-sizes", default="250,500,1000,2000,4690")
    parser.add_argument("--eval-patients", type=int, default=1000, help="phantom patients of the separate evaluation set")
    parser.add_argument("--probe-images", type=int, default=None, help="probe training images (default: all)")
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--work", default=None, help="folder for the data and the studies (kept; rerun continues)")
    args = parser.parse_args()
    args.recipes = args.recipes.split(",")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="greenfm-scaling-"))
    work.mkdir(parents=True, exist_ok=True)
    results = {}
    if args.only in (None, "phantoms"):
        data = phantom_manifest(work, args.patients)
        evaluation = phantom_manifest(work, args.eval_patients, name="phantoms_eval", seed=12, test=0.3)
        sizes = [int(s) for s in args.phantom_sizes.split(",")]
        results["phantoms"] = study("phantoms", data, work, args, sizes=sizes, img_size=64, text_from_labels=False,
                                    eval_data=evaluation)  # fmt: skip
    if args.only in (None, "pneumonia"):
        data = pneumonia_manifest(work)
        if data is not None:
            sizes = [int(s) for s in args.pneumonia_sizes.split(",")]
            results["pneumonia"] = study("pneumonia", data, work, args, sizes=sizes, img_size=32, text_from_labels=True)
    for name, result in results.items():
        print(f"\n== {name} ({result['seconds']:.0f} s)\n{result['table']}")
        for o in result["orderings"]:
            print(f"{o['ordering']:<40} {o['evaluation']:<10} {o['holds']:<17} higher {o['higher']}, "
                  f"no clear difference {o['no_clear_difference']}, lower {o['lower']}")  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    previous.update({"command": command_line(Path(__file__).name), "machine": machine_info(), "work": str(work)})
    previous.setdefault("studies", {}).update({k: {key: v for key, v in r.items() if key != "table"}
                                               for k, r in results.items()})  # fmt: skip
    RESULTS.write_text(json.dumps(previous, indent=2, default=str) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
