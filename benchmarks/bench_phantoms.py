"""Phantom generation speed, and what a raw-pixel probe scores on the phantoms.

Claims: (1) a few thousand 128 px radiographs (images, reports, manifest) take
seconds: about 500 images/s on two cores; (2) the findings are learnable but not
trivial: logistic regression on 32 x 32 thumbnails separates cardiomegaly well,
effusion, pneumothorax and consolidation a little, and nodules hardly at all.

    .venv/bin/python benchmarks/bench_phantoms.py [--patients 800 --probe-patients 600]

Prints two tables and writes benchmarks/results/phantoms.json. Timings depend on
the machine and on what else runs on it: the load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from greenfm.data.phantoms import CXR_FINDING_IDS, generate_phantoms

RESULTS = Path(__file__).resolve().parent / "results" / "phantoms.json"


def timed(folder: Path, **kwargs) -> dict:
    """Generate once; wall seconds, CPU seconds of this process and its workers, and counts."""
    shutil.rmtree(folder, ignore_errors=True)
    wall, cpu = time.perf_counter(), _cpu()
    manifest = generate_phantoms(folder, **kwargs)
    wall, cpu = time.perf_counter() - wall, _cpu() - cpu
    n = len(pd.read_csv(manifest))
    return {**{k: v for k, v in kwargs.items() if k != "site"}, "images": n, "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2), "images_per_s": round(n / wall, 1), "cpu_ms_per_image": round(1e3 * cpu / n, 2)}


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def probe(folder: Path, n_patients: int, site: str) -> dict:
    """Patient-grouped logistic regression on 32 x 32 thumbnails; AUROC on the pixel truth and on report labels."""
    manifest = generate_phantoms(folder, n_patients=n_patients, size=128, seed=1, site=site)
    table = pd.read_csv(manifest)
    thumbs = np.stack([np.asarray(Image.open(manifest.parent / p).resize((32, 32), Image.BILINEAR), np.float32)
                       .ravel() / 255 for p in table["path"]])
    test = table["patient_id"].str[-5:].astype(int).to_numpy() % 3 == 0
    out = {}
    for name in CXR_FINDING_IDS:
        truth, label = table[f"meta_true_{name}"].to_numpy(), table[name].to_numpy()
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=3000))
        model.fit(thumbs[~test], truth[~test])
        score = model.predict_proba(thumbs[test])[:, 1]
        known = label[test] != -1
        out[name] = {"prevalence": round(float(truth.mean()), 3),
                     "auroc_truth": round(float(roc_auc_score(truth[test], score)), 3),
                     "auroc_report": round(float(roc_auc_score(label[test][known] == 1, score[known])), 3)}
    return {"site": site, "images": len(table), "findings": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=800)
    parser.add_argument("--probe-patients", type=int, default=600)
    parser.add_argument("--ct-patients", type=int, default=12)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_phantoms(root / "warm", n_patients=2, size=64)  # imports and caches out of the timings
        for size in (64, 128, 224):
            for workers in sorted({1, cores}):
                runs.append(timed(root / f"cxr{size}", kind="cxr", n_patients=args.patients, size=size,
                                  workers=workers))
        for size in (64, 96):
            runs.append(timed(root / f"ct{size}", kind="ct", n_patients=args.ct_patients, size=size, workers=cores))
        probes = [probe(root / f"probe{site}", args.probe_patients, site) for site in ("A", "B")]
    result = {"machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                          "cores": cores, "load_average": [round(v, 2) for v in os.getloadavg()]},
              "generation": runs, "raw_pixel_probe": probes}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")

    print(f"{'kind':5s} {'size':>5s} {'workers':>7s} {'images':>7s} {'wall s':>7s} {'img/s':>7s} {'cpu ms/img':>10s}")
    for r in runs:
        print(f"{r['kind']:5s} {r['size']:5d} {r['workers']:7d} {r['images']:7d} {r['wall_s']:7.1f} "
              f"{r['images_per_s']:7.1f} {r['cpu_ms_per_image']:10.2f}")
    for p in probes:
        print(f"\nraw-pixel probe, site {p['site']} ({p['images']} images, 32 x 32 thumbnails, AUROC)")
        print(f"  {'finding':18s} {'prev':>6s} {'truth':>6s} {'report':>7s}")
        for name, v in p["findings"].items():
            print(f"  {name:18s} {v['prevalence']:6.3f} {v['auroc_truth']:6.3f} {v['auroc_report']:7.3f}")
    print(f"\nload average {result['machine']['load_average']} on {cores} cores; wrote {RESULTS}")


if __name__ == "__main__":
    main()
