"""Vectorised patient-cluster bootstrap vs a naive sklearn loop.

Claim: 1,000 resamples x 10,000 images x 14 findings (AUROC and AUPRC) take
seconds. The naive loop (sklearn on each materialised resample) is timed on a
few resamples, checked to agree with the vectorised values, and extrapolated.

    .venv/bin/python benchmarks/bench_bootstrap.py [--resamples 1000 --images 10000 --findings 14]

Prints a table and writes benchmarks/results/bootstrap.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import sklearn
from sklearn.metrics import average_precision_score, roc_auc_score

from greenfm.evaluate.bootstrap import bootstrap_columns, patient_resample_counts
from greenfm.evaluate.metrics import binary_columns

RESULTS = Path(__file__).resolve().parent / "results" / "bootstrap.json"


def synthetic(n_images: int, n_findings: int, seed: int = 0):
    """Multi-label test set: ~3 images per patient, 2-30% prevalence, 10% unlabelled."""
    rng = np.random.default_rng(seed)
    patients = rng.integers(0, n_images // 3, n_images)
    prevalence = rng.uniform(0.02, 0.3, n_findings)
    labels = (rng.random((n_images, n_findings)) < prevalence).astype(float)
    scores = rng.normal(size=(n_images, n_findings)) + labels
    labels[rng.random(labels.shape) < 0.1] = np.nan
    return labels, scores, patients


def naive(columns, counts):
    """sklearn on each resample, finding by finding (what the vectorised code replaces)."""
    n_resamples, k = counts.shape[0], columns.targets.shape[1]
    auroc, auprc = np.full((n_resamples, k), np.nan), np.full((n_resamples, k), np.nan)
    for r in range(n_resamples):
        idx = np.repeat(np.arange(counts.shape[1]), counts[r])
        for j in range(k):
            y, s = columns.targets[idx, j], columns.scores[idx, j]
            keep = np.isfinite(y)
            y, s = y[keep], s[keep]
            if 0 < y.sum() < len(y):
                auroc[r, j], auprc[r, j] = roc_auc_score(y, s), average_precision_score(y, s)
    return auroc, auprc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--findings", type=int, default=14)
    parser.add_argument("--naive-resamples", type=int, default=10, help="resamples timed with the naive loop")
    parser.add_argument("--repeats", type=int, default=3, help="vectorised timing: best of this many runs")
    args = parser.parse_args()

    labels, scores, patients = synthetic(args.images, args.findings)
    columns = binary_columns(labels, scores, task="multilabel")

    load_before = os.getloadavg()[0]
    vectorised, vectorised_cpu = [], []
    for _ in range(args.repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        counts = patient_resample_counts(patients, args.resamples, seed=0)
        auroc, auprc = bootstrap_columns(columns, counts)
        vectorised.append(time.perf_counter() - start)
        vectorised_cpu.append(time.process_time() - start_cpu)
    vec_s = min(vectorised)

    sub = counts[: args.naive_resamples]
    start, start_cpu = time.perf_counter(), time.process_time()
    ref_auroc, ref_auprc = naive(columns, sub)
    naive_s = time.perf_counter() - start
    naive_cpu_s = time.process_time() - start_cpu
    naive_full_s = naive_s * args.resamples / args.naive_resamples
    max_diff = float(
        max(
            np.nanmax(np.abs(auroc[: args.naive_resamples] - ref_auroc)),
            np.nanmax(np.abs(auprc[: args.naive_resamples] - ref_auprc)),
        )
    )
    same_nan = bool((np.isnan(auroc[: args.naive_resamples]) == np.isnan(ref_auroc)).all())

    result = {
        "claim": "patient-cluster bootstrap, AUROC + AUPRC, vectorised over resamples",
        "resamples": args.resamples,
        "images": args.images,
        "findings": args.findings,
        "patients": len(np.unique(patients)),
        "vectorised_s": round(vec_s, 3),
        "vectorised_runs_s": [round(t, 3) for t in vectorised],
        "vectorised_cpu_s": round(min(vectorised_cpu), 3),
        "naive_resamples_timed": args.naive_resamples,
        "naive_timed_s": round(naive_s, 3),
        "naive_cpu_s": round(naive_cpu_s, 3),
        "naive_extrapolated_s": round(naive_full_s, 1),
        "speedup": round(naive_full_s / vec_s, 1),
        "speedup_cpu": round(naive_cpu_s * args.resamples / args.naive_resamples / min(vectorised_cpu), 1),
        "max_abs_diff_vs_sklearn": max_diff,
        "degenerate_pattern_identical": same_nan,
        "machine": {
            "platform": platform.platform(),
            "machine": platform.machine(),
            "processor": platform.processor() or "unknown",
            "cpu_count": os.cpu_count(),
            "load_average_1min_at_start": round(load_before, 2),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scikit_learn": sklearn.__version__,
        },
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")

    shape = f"{args.resamples} x {args.images:,} x {args.findings}"
    scale = args.resamples / args.naive_resamples
    vec_cpu = min(vectorised_cpu)
    print(f"{'method':<34} {'resamples':>9} {'wall s':>9} {'CPU s':>9}")
    print(f"{'vectorised (greenfm)':<34} {args.resamples:>9} {vec_s:>9.2f} {vec_cpu:>9.2f}")
    print(f"{'naive sklearn loop, timed':<34} {args.naive_resamples:>9} {naive_s:>9.2f} {naive_cpu_s:>9.2f}")
    naive_full_cpu = naive_cpu_s * scale
    print(f"{'naive sklearn loop, extrapolated':<34} {args.resamples:>9} {naive_full_s:>9.1f} {naive_full_cpu:>9.1f}")
    print(f"shape {shape}; speed-up {naive_full_s / vec_s:.0f}x; max |diff| vs sklearn {max_diff:.1e}")
    print(
        f"machine: {os.cpu_count()} CPU(s), {platform.machine()} {platform.system()}, "
        f"load {load_before:.1f} at start; wrote {RESULTS}"
    )


if __name__ == "__main__":
    main()
