"""Can a small 3-D model learn the CT phantoms, and does it lose accuracy on another site?

The CT counterpart of ``bench_phantom_learnability.py``: a small 3-D CNN (four
Conv3d-BatchNorm-ReLU-MaxPool blocks, global max pooling) and greenfm's ``r3d_18_lite``
(k4s4 stem, pooled feature + linear head), trained from random weights on the report
labels of site-A chest CT phantoms (hedges masked, reader errors included), scored on
the pixel truth (``meta_true_*``) of the test patients: per-finding AUROC, AUROC by
size tertile (``meta_size_<finding>``), and the site-A model's macro AUROC drop on site
B with a patient-bootstrap 95% CI. The test set is the split's test patients plus
``--extra-test-patients`` more site-A patients drawn with another seed (never trained
on), so that each size tertile holds enough positives to show a trend. Volumes go through greenfm's own reader and the
``ct-chest`` contract (HU window -400 +/- 800, 3 x 1.5 x 1.5 mm) with the crop set to
the whole phantom, so nothing is cut off.

    .venv/bin/python benchmarks/bench_phantom_learnability_ct.py [--patients 300 --site-b-patients 120 --epochs 20]

Each model trains in its own process with one thread. Prints tables and writes
benchmarks/results/phantom_learnability_ct.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import command_line, machine_info, stamp  # noqa: E402
from bench_phantom_learnability import fit_and_score, print_size_and_shift, score_models  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "phantom_learnability_ct.json"
ARCHS = {"cnn3d": 2e-3, "r3d_18_lite": 1e-3}  # name: peak learning rate (one-cycle)


def load_volumes(manifest: Path, table: pd.DataFrame, contract) -> np.ndarray:
    """Every volume of ``table`` through greenfm's reader and contract: (N, 1, D, H, W) float16."""
    from greenfm.data.volume_files import read_nifti
    from greenfm.data.volumes import volume_to_unit

    root = manifest.parent
    return np.stack([volume_to_unit(read_nifti(root / p), contract).numpy().astype(np.float16)
                     for p in table["path"]])


def build(arch: str, n_findings: int):
    import torch
    from torch import nn

    if arch == "cnn3d":

        def block(i: int, o: int) -> nn.Module:
            return nn.Sequential(nn.Conv3d(i, o, 3, padding=1), nn.BatchNorm3d(o), nn.ReLU(), nn.MaxPool3d(2))

        return nn.Sequential(block(1, 16), block(16, 32), block(32, 64), block(64, 64), nn.AdaptiveMaxPool3d(1),
                             nn.Flatten(), nn.Linear(64, n_findings))
    from greenfm.models.backbones import create_encoder

    encoder = create_encoder(arch)
    return nn.Sequential(encoder, nn.Linear(encoder.embed_dim, n_findings))


def train_and_score(job: dict) -> dict:
    """Train one model (own process, one thread); best epoch by val macro AUROC; scores on test and site B."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(job["seed"])
    data = np.load(job["arrays"])
    x_train, y_train = data["x_train"], data["y_train"]
    model = build(job["arch"], y_train.shape[1])

    def batch(idx: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        xb = torch.from_numpy(x_train[idx]).float()
        if rng.integers(0, 2):  # left-right flip per batch: findings occur on either side
            xb = xb.flip(-1)
        return xb, torch.from_numpy(y_train[idx]).float()

    return {"arch": job["arch"], "epochs": job["epochs"], "lr": job["lr"], "batch": job["batch"],
            **fit_and_score(model, job, data, batch, lambda x: model(torch.from_numpy(x).float()), chunk=32)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=300, help="site-A patients (~2.5 volumes each)")
    parser.add_argument("--site-b-patients", type=int, default=120)
    parser.add_argument("--extra-test-patients", type=int, default=600,
                        help="more site-A patients, test only (own seed), so size tertiles hold enough positives")
    parser.add_argument("--size", type=int, default=32, help="phantom in-plane voxels (slices: size // 2)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--archs", default=",".join(ARCHS), help=f"models to train, of {', '.join(ARCHS)}")
    parser.add_argument("--results", type=Path, default=RESULTS, help=f"JSON to write (default {RESULTS.name})")
    args = parser.parse_args()
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    if not archs or set(archs) - set(ARCHS):
        raise SystemExit(f"--archs: choose from {', '.join(ARCHS)}, got {args.archs!r}")
    from greenfm.api import data_split
    from greenfm.data.contract import get_contract
    from greenfm.data.phantoms import CT_FINDING_IDS, generate_phantoms

    findings = list(CT_FINDING_IDS)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest_a = generate_phantoms(root / "A", kind="ct", n_patients=args.patients, size=args.size,
                                       seed=args.seed, site="A")
        manifest_b = generate_phantoms(root / "B", kind="ct", n_patients=args.site_b_patients, size=args.size,
                                       seed=args.seed + 1, site="B")
        crop = [args.size // 2, args.size, args.size]
        contract_file = root / "contract.json"
        contract_file.write_text(json.dumps({"preset": "ct-chest", "size": crop, "pad_size": crop}) + "\n")
        contract = get_contract(contract_file)
        split = root / "split.csv"
        data_split(data=manifest_a, out=split, val=0.15, test=0.25, seed=args.seed)
        table, table_b = pd.read_csv(split), pd.read_csv(manifest_b)
        if args.extra_test_patients:  # never trained on: a new seed, patient ids kept apart
            manifest_x = generate_phantoms(root / "A-test", kind="ct", n_patients=args.extra_test_patients,
                                           size=args.size, seed=args.seed + 2, site="A")
            extra = pd.read_csv(manifest_x).assign(split="test")
            extra["patient_id"] = "extra-" + extra["patient_id"].astype(str)
            extra["path"] = [str(Path(manifest_x).parent / p) for p in extra["path"]]
            table = pd.concat([table, extra], ignore_index=True)
        volumes = load_volumes(split, table, contract)
        parts = {s: (table["split"] == s).to_numpy() for s in ("train", "val", "test")}
        truth = table[[f"meta_true_{f}" for f in findings]].to_numpy()
        labels = table[findings].to_numpy(dtype=float)
        arrays = root / "arrays.npz"
        np.savez(arrays, x_train=volumes[parts["train"]], y_train=labels[parts["train"]],
                 x_val=volumes[parts["val"]], t_val=truth[parts["val"]], x_test=volumes[parts["test"]],
                 x_siteb=load_volumes(manifest_b, table_b, contract))
        jobs = [{"arch": a, "arrays": str(arrays), "epochs": args.epochs, "batch": args.batch, "lr": ARCHS[a],
                 "seed": args.seed} for a in archs]
        with ProcessPoolExecutor(min(2, len(jobs))) as pool:  # one model per core
            trained = list(pool.map(train_and_score, jobs))

    test = table[parts["test"]]
    truth_test, truth_b = truth[parts["test"]], table_b[[f"meta_true_{f}" for f in findings]].to_numpy()
    models, shift = score_models(trained, test, truth_test, table_b, truth_b, findings)
    result = {"claim": __doc__.splitlines()[0], "command": command_line("bench_phantom_learnability_ct.py"),
              "stamp": stamp(), "machine": machine_info(load_average=[round(v, 2) for v in os.getloadavg()]),
              "data": {"site_a_volumes": len(table), "site_a_patients": int(table["patient_id"].nunique()),
                       "split_volumes": {s: int(m.sum()) for s, m in parts.items()}, "site_b_volumes": len(table_b),
                       "extra_test_patients": args.extra_test_patients, "crop": crop,
                       "prevalence_test": {f: round(float(truth_test[:, k].mean()), 3) for k, f in enumerate(findings)},
                       "reader_error_rate": round(float((table["meta_reader_error"] > 0).mean()), 3)},
              "models": models, "site_shift": shift, "wall_s": round(time.perf_counter() - started, 1)}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2) + "\n")
    print(f"per-finding test AUROC (pixel truth), CT phantoms {crop}, {result['data']['split_volumes']} volumes")
    print(f"  {'finding':22s} " + " ".join(f"{m:>12s}" for m in models))
    for f in findings:
        print(f"  {f:22s} " + " ".join(f"{models[m]['test_auroc'][f]:12.3f}" for m in models))
    print(f"  {'macro':22s} " + " ".join(f"{models[m]['test_macro_auroc']:12.3f}" for m in models))
    print_size_and_shift(models, shift)
    print(f"\nwall {result['wall_s']} s; wrote {args.results}")


if __name__ == "__main__":
    main()
