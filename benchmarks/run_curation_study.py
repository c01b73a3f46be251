"""Does CheXficient's curation keep accuracy at a fraction of the compute here? Curated vs full data.

Question (METHODS 4; the paper: CLIP on 22.7% of the pairs, chosen by prototype curation, matches
full-data training at < 27.3% of its compute and helps rare findings): with the same towers,
init, optimiser and batch, how do three runs compare?

- ``curated``: the ``chexficient`` recipe, epoch 1 curates over all data, epochs 2..E train on the
  subset (``lr_horizon`` fixed);
- ``full_equal_epochs``: the same model and loss on all data for E epochs (no curation);
- ``full_equal_compute``: the same, stopped after as many samples as the curated run saw (its ledger).

Data sets:

- ``phantoms``: greenfm chest-radiograph phantoms (``--patients``, 64 px) from a site profile made
  long-tailed (pneumothorax and pericardial/pleural effusion rare: odds x 0.25), split by patient
  (val 0.1, test 0.3); reports and findings from the generator.
- ``covid_notes``: ``../shared/data/covid_cxr_notes`` (295 radiographs, 149 patients), clinical
  notes as text, findings from greenfm's rule labeler (``chexpert14``), split by patient (test 0.3).
  Skipped when the folder is absent.

Model (tiny, for 2 CPU cores): image ``vit_tiny_test`` at 64 px (random init, seed 0); text: the
bundled MiniLM-L6, locked (each distinct text encoded once); heads ``Linear(., 128)`` without
bias (so greenfm's zero-shot verb loads the export), logit scale ln 100, unclamped. AdamW lr 1e-3,
wd 1e-4, cosine per step to 1e-4, batch ``--batch`` (m scaled to it: ``max(1, round(0.125 B / 6))``).

Evaluation on the test split: zero-shot ("{c}" / "no {c}", CheXficient's prompts) and a linear
probe (standardised L2-normalised image embeddings, logistic regression per finding, trained on the
train split), AUROC per finding with 1,000 patient-bootstrap resamples (95% percentile CIs); the
findings are grouped as rare (train prevalence < 10%) or common.

    .venv/bin/python benchmarks/run_curation_study.py [--epochs 8] [--patients 400] [--only phantoms]

Prints a table and writes benchmarks/results/curation_study.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import command_line, machine_info  # noqa: E402
from run_image_text_study import data_sets  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "curation_study.json"
RUNS = ("curated", "full_equal_epochs", "full_equal_compute")


def phantom_manifest(root: Path, patients: int) -> Path:
    from dataclasses import replace

    from greenfm.data.phantoms import generate_phantoms
    from greenfm.data.phantoms.sites import get_site
    from greenfm.data.splits import split_manifest

    site = get_site("A")
    rare = {"pneumothorax": 0.25, "pleural_effusion": 0.25, "pericardial_effusion": 0.25}
    site = replace(site, odds_scale={**site.odds_scale, **rare})
    source = generate_phantoms(root / "phantoms", n_patients=patients, size=64, seed=21, site=site)
    split_manifest(source, root / "phantoms_split.csv", val=0.1, test=0.3, seed=0)
    return root / "phantoms_split.csv"


def train(kind: str, data: Path, out: Path, args: argparse.Namespace, cache: Path, max_steps: int | None) -> dict:
    from greenfm.workflows.pretrain import PretrainConfig, run_pretrain

    method = {"lock_text": True, "embed_dim": 128, "logit_scale_init": math.log(100.0)}
    if kind == "curated":
        recipe = "chexficient"
        method.update(projection_bias=False, warmup_samples=min(800, 4 * args.batch))
    else:
        recipe = "clip"
        method["max_logit_scale"] = 1e9  # unclamped, as CheXficient's
    train_options = {"epochs": args.epochs, "batch_size": args.batch, "lr": 1e-3, "min_lr": 1e-4, "weight_decay": 1e-4,
                     "warmup": 0, "schedule_interval": "step", "num_workers": 0, "seed": 0, "progress_bar": False,
                     "show_ledger": False, "checkpoint_every_epochs": None, "accelerator": "cpu",
                     "track_energy": False}  # fmt: skip
    if max_steps is not None:
        train_options["max_steps"] = max_steps
    config = PretrainConfig(recipe=recipe, data=str(data), backbone="vit_tiny_test", img_size=64, init="random",
                            contract="cxr-medpeft", augment="none", cache=str(cache), method=method,
                            train=train_options)  # fmt: skip
    tic = time.perf_counter()
    result = run_pretrain(config, out)
    ledger = result.compute
    keys = ("samples_seen", "samples_trained", "optimizer_steps", "total_training_flops", "train_time_s",
            "curated_subset_size", "compute_fraction_of_full_data", "dataset_size")  # fmt: skip
    return {"wall_s": time.perf_counter() - tic, **{k: ledger.get(k) for k in keys}}


def zero_shot(run: Path, data: Path, out: Path, cache: Path) -> pd.DataFrame:
    from greenfm.workflows.image_text_config import ZeroshotConfig
    from greenfm.workflows.image_text_eval import run_zeroshot

    run_zeroshot(ZeroshotConfig(model=str(run), data=str(data), cache=str(cache), prompts="chexficient"), out)
    return pd.read_parquet(out / "predictions.parquet")


def probe(run: Path, data: Path, out: Path, cache: Path) -> pd.DataFrame:
    """Per-finding logistic regression on the run's image embeddings: test scores (id, finding, label, score)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from greenfm.api import embed
    from greenfm.data.embeddings import read_embeddings
    from greenfm.data.manifest import load_manifest

    embed(model=run, data=data, out=out / "embeddings.parquet", cache=cache, device="cpu")
    emb = read_embeddings(out / "embeddings.parquet")
    manifest = load_manifest(data)
    table = manifest.table.set_index("id").loc[emb.ids]
    x = emb.vectors / np.linalg.norm(emb.vectors, axis=1, keepdims=True)
    train, test = (table["split"] == "train").to_numpy(), (table["split"] == "test").to_numpy()
    scaler = StandardScaler().fit(x[train])
    rows = []
    for finding in manifest.findings:
        y = table[finding].to_numpy(dtype=float)
        ok_train, ok_test = train & np.isin(y, [0, 1]), test & np.isin(y, [0, 1])
        if len(np.unique(y[ok_train])) < 2:
            continue
        model = LogisticRegression(C=1.0, max_iter=5000, random_state=42).fit(scaler.transform(x[ok_train]), y[ok_train])
        score = model.predict_proba(scaler.transform(x[ok_test]))[:, 1]
        rows += [{"id": i, "patient_id": p, "finding": finding, "label": int(t), "score": float(s)}
                 for i, p, t, s in zip(table.index[ok_test], table["patient_id"][ok_test], y[ok_test], score)]  # fmt: skip
    return pd.DataFrame(rows)


def per_finding(predictions: pd.DataFrame, resamples: int = 1000) -> dict:
    """AUROC per finding with a patient-bootstrap 95% CI (findings with one class skipped)."""
    from sklearn.metrics import roc_auc_score

    from greenfm.evaluate.bootstrap import patient_resample_counts, weighted_auroc

    out = {}
    for finding, rows in predictions.groupby("finding"):
        rows = rows[rows["label"].isin([0, 1])]
        y, s = rows["label"].to_numpy(), rows["score"].to_numpy()
        if len(np.unique(y)) < 2:
            out[finding] = {"auroc": None, "n_positive": int(y.sum()), "skipped": "one class in test"}
            continue
        counts = patient_resample_counts(rows["patient_id"].astype(str).tolist(), resamples, seed=0)
        boots = weighted_auroc(y, s, counts)
        boots = boots[np.isfinite(boots)]
        out[finding] = {"auroc": float(roc_auc_score(y, s)), "ci": [float(np.percentile(boots, 2.5)),
                        float(np.percentile(boots, 97.5))], "n_positive": int(y.sum()), "n": int(len(y))}  # fmt: skip
    return out


def prevalence(data: Path) -> dict[str, float]:
    from greenfm.data.manifest import load_manifest

    manifest = load_manifest(data, check_files=False)
    train = manifest.table[manifest.table["split"] == "train"]
    return {f: float((train[f] == 1).sum() / max(1, train[f].isin([0, 1]).sum())) for f in manifest.findings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=96)
    parser.add_argument("--patients", type=int, default=400)
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
            results[name] = {"train_prevalence": prevalence(data)}
            for kind in RUNS:
                run = work / name / kind
                steps = None
                if kind == "full_equal_compute":
                    steps = max(1, math.ceil(results[name]["curated"]["training"]["samples_seen"] / args.batch))
                training = train(kind, data, run, args, cache, steps)
                evals = {"zeroshot": per_finding(zero_shot(run, data, run / "zeroshot", cache)),
                         "probe": per_finding(probe(run, data, run / "probe", cache))}  # fmt: skip
                results[name][kind] = {"training": training, **evals}
                print(f"{name} {kind}: {json.dumps(training)}", flush=True)
    print(f"\n{'data':12} {'run':20} {'compute':>8} {'kind':9} {'finding (prevalence)':34} {'AUROC [95% CI]':>24}")
    for name, res in results.items():
        full = res["full_equal_epochs"]["training"]["samples_seen"]
        for kind in RUNS:
            share = res[kind]["training"]["samples_seen"] / full
            for evaluation in ("zeroshot", "probe"):
                for finding, m in res[kind][evaluation].items():
                    p = res["train_prevalence"].get(finding, float("nan"))
                    value = (f"{m['auroc']:.3f} [{m['ci'][0]:.3f}, {m['ci'][1]:.3f}]" if m.get("auroc") is not None
                             else m.get("skipped", "n/a"))  # fmt: skip
                    print(f"{name:12} {kind:20} {share:8.3f} {evaluation:9} {finding + f' ({p:.1%})':34} {value:>24}")
    earlier = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    if args.epochs != 6:  # one entry per data set and length (6 epochs: the plain name)
        results = {f"{name}-e{args.epochs}": value for name, value in results.items()}
    runs = {**earlier.get("runs", {}), **{name: {"command": command_line(Path(__file__).name), "epochs": args.epochs,
                                                 "batch": args.batch, "patients": args.patients,
                                                 "wall_s": round(time.perf_counter() - started, 1)}
                                          for name in results}}  # fmt: skip
    out = {"runs": runs, "results": {**earlier.get("results", {}), **results}, "machine": machine_info()}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(f"wrote {RESULTS} (data sets not run this time are kept from earlier runs)")


if __name__ == "__main__":
    main()
