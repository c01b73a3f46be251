"""Can a supervised model learn the radiograph phantoms at 64 px, and does it lose accuracy on another site?

Claims: (1) a ResNet-18 and greenfm's tiny ViT (``vit_tiny_test`` at 64 px with patch 8, and
the same at patch 16: the 16 tokens of the demo's 32 px ViT at full resolution), trained from random
weights on ~2,000 site-A phantoms at 64 px, reach per-finding test AUROC >= 0.90 on
cardiomegaly, effusion and consolidation and >= 0.75 on pneumothorax and nodules,
and AUROC rises with the finding's size (tertiles of ``meta_size_<finding>``);
(2) ``greenfm finetune --model random --backbone vit_tiny_test --img-size 64 --mode full
--epochs 10 --batch-size 64 --lr 1e-3`` on the same split reaches its reported test
macro AUROC; (3) the site-A ResNet-18 loses macro AUROC on site B (acquisition and
positioning differ, see ``greenfm.data.phantoms.sites``), with a bootstrap CI.

    .venv/bin/python benchmarks/bench_phantom_learnability.py [--patients 800 --site-b-patients 400]
    .venv/bin/python benchmarks/bench_phantom_learnability.py --archs vit_tiny_test_p16 --skip-finetune

``--archs`` trains some of the models only; the others' results are kept from the
existing JSON when it was measured on the same data (same sizes and seed).

Models train on the report labels (hedges masked, reader errors included, as a user
would) and are scored on the pixel truth (``meta_true_*``) of the test patients.
Each model trains in its own process with one thread (fastest for models this small
on a few cores). Prints tables and writes benchmarks/results/phantom_learnability.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import command_line, machine_info, stamp  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "phantom_learnability.json"
FINDINGS = ("cardiomegaly", "pleural_effusion", "pneumothorax", "consolidation", "lung_nodule")
TARGETS = {"cardiomegaly": 0.90, "pleural_effusion": 0.90, "consolidation": 0.90, "pneumothorax": 0.75,
           "lung_nodule": 0.75}
FINETUNE = ["--model", "random", "--backbone", "vit_tiny_test", "--img-size", "64", "--mode", "full",
            "--epochs", "10", "--batch-size", "64", "--lr", "1e-3"]
VIT_KWARGS = {"patch_size": 8, "embed_dim": 64, "depth": 4, "num_heads": 4, "reg_tokens": 4, "init_values": 1e-5,
              "no_embed_class": True}  # greenfm's vit_tiny_test (models/backbones.py), at 64 px
ARCHS = {  # name: (learning rate, ViT keyword changes; None for the ResNet)
    "resnet18": (2e-3, None),
    "vit_tiny_test": (1e-3, {}),
    "vit_tiny_test_p16": (1e-3, {"patch_size": 16}),
}


def load_images(manifest: Path, table: pd.DataFrame) -> np.ndarray:
    return np.stack([np.asarray(Image.open(manifest.parent / p)) for p in table["path"]])


def train_and_score(job: dict) -> dict:
    """Train one model (own process, one thread); test scores on site A and B, best epoch by val AUROC."""
    import timm
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(job["seed"])
    data = np.load(job["arrays"])
    x_train, y_train = data["x_train"], data["y_train"]
    changes = ARCHS[job["arch"]][1]
    if changes is None:
        model = timm.create_model("resnet18", pretrained=False, in_chans=3, num_classes=len(FINDINGS))
    else:
        model = timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, img_size=64, in_chans=3,
                                  num_classes=len(FINDINGS), **{**VIT_KWARGS, **changes})

    def tensor(x: np.ndarray) -> torch.Tensor:  # grey repeated to 3 channels, as greenfm's default contract
        t = torch.from_numpy(x).float().div_(255.0).sub_(0.5).div_(0.25)
        return t[:, None].expand(-1, 3, -1, -1)

    def batch(idx: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        shift = rng.integers(-3, 4, 2)  # a few pixels of translation per batch
        xb = np.roll(x_train[idx], tuple(int(s) for s in shift), axis=(1, 2))
        return tensor(xb), torch.from_numpy(y_train[idx]).float()

    return {"arch": job["arch"], "epochs": job["epochs"],
            **fit_and_score(model, job, data, batch, lambda x: model(tensor(x)), chunk=256)}


def fit_and_score(model, job: dict, data, batch, forward, chunk: int) -> dict:
    """One-cycle AdamW on masked BCE; the best epoch by val macro AUROC; its test and site-B scores.

    ``batch(indices, rng)`` gives (inputs, labels) for training indices; ``forward(x)`` the
    logits of a numpy chunk of images or volumes. Returns the history, time and scores.
    """
    import torch

    n_train = len(data["y_train"])
    opt = torch.optim.AdamW(model.parameters(), lr=job["lr"], weight_decay=0.05)
    steps = job["epochs"] * int(np.ceil(n_train / job["batch"]))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=job["lr"], total_steps=steps, pct_start=0.15)
    rng = np.random.default_rng(job["seed"])

    @torch.no_grad()
    def predict(x: np.ndarray) -> np.ndarray:
        model.eval()
        return np.concatenate([torch.sigmoid(forward(x[i:i + chunk])).numpy() for i in range(0, len(x), chunk)])

    best, history, start = (-1.0, None), [], time.perf_counter()
    for epoch in range(job["epochs"]):
        model.train()
        order = rng.permutation(n_train)
        for i in range(0, len(order), job["batch"]):
            xb, yb = batch(order[i:i + job["batch"]], rng)
            known = (yb >= 0).float()  # hedged (-1) labels are masked, as greenfm's objective does
            loss = (torch.nn.functional.binary_cross_entropy_with_logits(model(xb), yb.clamp(min=0), reduction="none")
                    * known).sum() / known.sum().clamp(min=1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        val = macro_auroc(data["t_val"], predict(data["x_val"]))
        history.append(round(val, 4))
        print(f"{job['arch']} epoch {epoch + 1}: val macro AUROC {val:.3f} ({time.perf_counter() - start:.0f} s)",
              flush=True)
        if best[1] is None or val > best[0]:  # a nan AUROC (no positives in val) keeps the first epoch
            best = (val, {k: predict(data[f"x_{k}"]) for k in ("test", "siteb")})
    return {"val_macro_auroc_by_epoch": history, "train_s": round(time.perf_counter() - start, 1), "scores": best[1]}


def macro_auroc(truth: np.ndarray, score: np.ndarray) -> float:
    return float(np.mean([roc_auc_score(truth[:, k], score[:, k]) for k in range(truth.shape[1])
                          if 0 < truth[:, k].sum() < len(truth)]))


def size_tertiles(table: pd.DataFrame, truth: np.ndarray, score: np.ndarray, findings=FINDINGS) -> dict:
    """AUROC of each size tertile's positives against all negatives, per finding."""
    out = {}
    for k, name in enumerate(findings):
        pos = truth[:, k] == 1
        if pos.sum() < 3 or pos.all():  # too few positives (or negatives) to split into thirds
            continue
        sizes = table[f"meta_size_{name}"].to_numpy(dtype=float)
        cuts = np.quantile(sizes[pos], [1 / 3, 2 / 3])
        bins = np.digitize(sizes, cuts)
        row = {}
        for t, label in enumerate(("small", "middle", "large")):
            keep = ~pos | (pos & (bins == t))
            row[label] = round(float(roc_auc_score(truth[keep, k], score[keep, k])), 3)
        row["size_cuts"] = [round(float(c), 3) for c in cuts]
        out[name] = row
    return out


def shift_interval(patients_a, truth_a, score_a, patients_b, truth_b, score_b, n: int = 1000, seed: int = 0):
    """Macro AUROC on A minus on B, with a patient-bootstrap 95% CI (A and B resampled independently)."""
    rng = np.random.default_rng(seed)

    def resample(patients):
        ids, inverse = np.unique(patients, return_inverse=True)
        members = [np.flatnonzero(inverse == i) for i in range(len(ids))]
        return lambda: np.concatenate([members[i] for i in rng.integers(0, len(ids), len(ids))])

    draw_a, draw_b = resample(patients_a), resample(patients_b)
    diffs = []
    for _ in range(n):
        ia, ib = draw_a(), draw_b()
        diffs.append(macro_auroc(truth_a[ia], score_a[ia]) - macro_auroc(truth_b[ib], score_b[ib]))
    point = macro_auroc(truth_a, score_a) - macro_auroc(truth_b, score_b)
    lo, hi = np.quantile(diffs, [0.025, 0.975])
    return round(point, 4), [round(float(lo), 4), round(float(hi), 4)]


def run_finetune(split: Path, out: Path, cache: Path) -> dict:
    """The exact ``greenfm finetune`` command of the claim, on the same split; its reported test macro AUROC."""
    greenfm = Path(sys.executable).parent / "greenfm"
    cmd = [str(greenfm), "finetune", *FINETUNE, "--data", str(split), "--out", str(out), "--cache", str(cache)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
    wall = time.perf_counter() - start
    text = proc.stdout + proc.stderr
    found = {}
    for path in sorted(out.rglob("*.json")):
        try:
            found[str(path.relative_to(out))] = json.loads(path.read_text())
        except (ValueError, OSError):
            continue
    macro = re.findall(r"macro[^\n]*?(0\.\d+)\s*\[(0\.\d+),\s*(0\.\d+)\]", text, re.I)
    return {"command": "greenfm finetune " + " ".join(FINETUNE) + " --data SPLIT --out RUN", "returncode":
            proc.returncode, "wall_s": round(wall, 1), "test_macro_auroc": macro[-1] if macro else None,
            "output_tail": text[-3000:], "json_files": sorted(found)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=800, help="site-A patients (~2.45 images each)")
    parser.add_argument("--site-b-patients", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-finetune", action="store_true")
    parser.add_argument("--archs", default=",".join(ARCHS), help=f"models to train, of {', '.join(ARCHS)}")
    args = parser.parse_args()
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    if not archs or set(archs) - set(ARCHS):
        raise SystemExit(f"--archs: choose from {', '.join(ARCHS)}, got {args.archs!r}")
    from greenfm.api import data_split
    from greenfm.data.phantoms import generate_phantoms

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest_a = generate_phantoms(root / "A", n_patients=args.patients, size=64, seed=args.seed, site="A")
        manifest_b = generate_phantoms(root / "B", n_patients=args.site_b_patients, size=64, seed=args.seed + 1,
                                       site="B")
        split = root / "split.csv"
        data_split(data=manifest_a, out=split, val=0.1, test=0.2, seed=args.seed)
        table = pd.read_csv(split)
        table_b = pd.read_csv(manifest_b)
        images = load_images(split, table)
        parts = {s: (table["split"] == s).to_numpy() for s in ("train", "val", "test")}
        truth = table[[f"meta_true_{f}" for f in FINDINGS]].to_numpy()
        labels = table[list(FINDINGS)].to_numpy(dtype=float)
        arrays = root / "arrays.npz"
        np.savez(arrays, x_train=images[parts["train"]], y_train=labels[parts["train"]],
                 x_val=images[parts["val"]], t_val=truth[parts["val"]], x_test=images[parts["test"]],
                 x_siteb=load_images(manifest_b, table_b))
        jobs = [{"arch": arch, "arrays": str(arrays), "epochs": args.epochs, "batch": 64, "lr": ARCHS[arch][0],
                 "seed": args.seed} for arch in archs]
        with ProcessPoolExecutor(min(2, len(jobs))) as pool:  # one model per core
            trained = list(pool.map(train_and_score, jobs))
        finetune = None if args.skip_finetune else run_finetune(split, root / "finetune", root / "cache")

    test = table[parts["test"]]
    truth_test, truth_b = truth[parts["test"]], table_b[[f"meta_true_{f}" for f in FINDINGS]].to_numpy()
    models, shift = score_models(trained, test, truth_test, table_b, truth_b, FINDINGS)
    result = {"claim": __doc__.splitlines()[0], "command": command_line("bench_phantom_learnability.py"),
              "stamp": stamp(), "machine": machine_info(load_average=[round(v, 2) for v in os.getloadavg()]),
              "data": {"site_a_images": len(table), "site_a_patients": int(table["patient_id"].nunique()),
                       "split_images": {s: int(m.sum()) for s, m in parts.items()}, "site_b_images": len(table_b),
                       "prevalence_test": {f: round(float(truth_test[:, k].mean()), 3) for k, f in enumerate(FINDINGS)},
                       "reader_error_rate": round(float((table["meta_reader_error"] > 0).mean()), 3)},
              "targets": TARGETS, "models": models, "site_shift": shift, "finetune": finetune,
              "wall_s": round(time.perf_counter() - started, 1)}
    keep_earlier(result, archs, args.skip_finetune)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print_tables(result)


def keep_earlier(result: dict, archs: list[str], skipped_finetune: bool) -> None:
    """Carry over the models (and finetune run) not trained now from the JSON of a run on the same data."""
    if not RESULTS.is_file():
        return
    earlier = json.loads(RESULTS.read_text())
    if earlier.get("data") != result["data"]:
        print("the existing results were measured on other data: they are replaced, not merged")
        return
    for arch, row in earlier.get("models", {}).items():
        if arch not in archs:
            result["models"][arch] = row
            result["site_shift"][arch] = earlier["site_shift"][arch]
            result.setdefault("kept_from", {})[arch] = earlier.get("stamp")
    if skipped_finetune and earlier.get("finetune"):
        result["finetune"] = earlier["finetune"]
        result.setdefault("kept_from", {})["finetune"] = earlier.get("stamp")


def score_models(trained: list[dict], test: pd.DataFrame, truth_test: np.ndarray, table_b: pd.DataFrame,
                 truth_b: np.ndarray, findings) -> tuple[dict, dict]:
    """Per model: test AUROC per finding, macro, by size tertile; and its site shift (site-A test vs site B)."""
    models, shift = {}, {}
    for result in trained:
        scores = result.pop("scores")
        score, score_b = scores["test"], scores["siteb"]
        arch = result["arch"]
        models[arch] = {
            **result,
            "test_auroc": {f: round(float(roc_auc_score(truth_test[:, k], score[:, k])), 3)
                           for k, f in enumerate(findings)},
            "test_macro_auroc": round(macro_auroc(truth_test, score), 3),
            "size_tertile_auroc": size_tertiles(test, truth_test, score, findings),
        }
        # Site shift: the site-A model on site-A test patients vs all site-B patients.
        drop, ci = shift_interval(test["patient_id"].to_numpy(), truth_test, score,
                                  table_b["patient_id"].to_numpy(), truth_b, score_b)
        shift[arch] = {"site_a": round(macro_auroc(truth_test, score), 3),
                       "site_b": round(macro_auroc(truth_b, score_b), 3), "drop": drop, "drop_ci": ci,
                       "site_b_auroc": {f: round(float(roc_auc_score(truth_b[:, k], score_b[:, k])), 3)
                                        for k, f in enumerate(findings)}}
    return models, shift


def print_size_and_shift(models: dict, site_shift: dict) -> None:
    for m in models:
        print(f"\nAUROC by size tertile ({m}): small / middle / large")
        for f, row in models[m]["size_tertile_auroc"].items():
            print(f"  {f:22s} {row['small']:.3f} / {row['middle']:.3f} / {row['large']:.3f}   cuts {row['size_cuts']}")
    print("\nsite shift: site-A model, macro AUROC on site-A test vs site B (patient bootstrap 95% CI)")
    for m, s in site_shift.items():
        print(f"  {m[:18]:18s} A {s['site_a']:.3f}  B {s['site_b']:.3f}  drop {s['drop']:.3f} {s['drop_ci']}")


def print_tables(result: dict) -> None:
    models = result["models"]
    print(f"per-finding test AUROC (pixel truth), 64 px, {result['data']['split_images']} images")
    print(f"  {'finding':18s} {'target':>6s} " + " ".join(f"{m[:14]:>14s}" for m in models))
    for f in FINDINGS:
        print(f"  {f:18s} {TARGETS[f]:6.2f} " + " ".join(f"{models[m]['test_auroc'][f]:14.3f}" for m in models))
    print(f"  {'macro':18s} {'':6s} " + " ".join(f"{models[m]['test_macro_auroc']:14.3f}" for m in models))
    print_size_and_shift(models, result["site_shift"])
    ft = result["finetune"]
    if ft:
        print(f"\n{ft['command']}\n  test macro AUROC {ft['test_macro_auroc']}  "
              f"({ft['wall_s']} s, rc {ft['returncode']})")
    print(f"\nwall {result['wall_s']} s; wrote {RESULTS}")


if __name__ == "__main__":
    main()
