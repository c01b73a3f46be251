"""Zero-shot and image-text retrieval scoring from given embeddings: seconds, not minutes.

Claim: 10,000 images x 14 findings, zero-shot probabilities plus per-finding AUROC /
AUPRC with 1,000 patient-cluster bootstrap resamples (about 4,000 patients, about 30%
positives), and retrieval between the 10,000 images and their reports (both
directions, Recall@1/5/10/50/100, mean and median rank), take <= 10 s on a 2-core
machine with 1-2 threads. Embeddings are random (D = 512) with a weak planted
signal; the scoring cost does not depend on their values.

    .venv/bin/python benchmarks/bench_zeroshot_retrieval.py [--threads 2 --repeats 3]

``--threads`` limits both torch and numpy's BLAS (threadpoolctl) for the timed parts.

Prints a table (best and median of the repeats per part) and writes
benchmarks/results/zeroshot_retrieval.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from bench_common import command_line, machine_info, stamp
from threadpoolctl import threadpool_info, threadpool_limits

from greenfm.evaluate.retrieval import retrieval_metrics
from greenfm.evaluate.zeroshot import score_zeroshot, zeroshot_probabilities

RESULTS = Path(__file__).resolve().parent / "results" / "zeroshot_retrieval.json"
FINDINGS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged_Cardiomediastinum", "Fracture",
            "Lung_Lesion", "Lung_Opacity", "No_Finding", "Pleural_Effusion", "Pleural_Other", "Pneumonia",
            "Pneumothorax", "Support_Devices"]  # fmt: skip


def synthetic(n_images: int, n_findings: int, n_patients: int, dim: int, seed: int = 0):
    """Embeddings, labels (30% positive, 5% uncertain), patients and reports (about 20% shared)."""
    rng = np.random.default_rng(seed)
    patients = rng.permutation(np.arange(n_images) % n_patients)
    labels = (rng.random((n_images, n_findings)) < 0.3).astype(float)
    labels[rng.random(labels.shape) < 0.05] = -1.0
    positive = rng.normal(size=(n_findings, dim)).astype(np.float32)
    negative = rng.normal(size=(n_findings, dim)).astype(np.float32)
    signal = (2 * np.clip(labels, 0, 1) - 1) @ (positive - negative) / np.sqrt(dim)
    images = (rng.normal(size=(n_images, dim)) + 0.3 * signal).astype(np.float32)
    report_ids = np.where(rng.random(n_images) < 0.2, rng.integers(0, 200, n_images), np.arange(n_images) + 200)
    texts = [f"report {j}" for j in report_ids]
    text_emb = (images + 3.0 * rng.normal(size=images.shape)).astype(np.float32)
    return images, positive, negative, labels, patients, texts, text_emb


def stats(runs: list[tuple[float, float]]) -> dict:
    """Best and median wall seconds, best CPU seconds and every run's wall seconds."""
    wall, cpu = [w for w, _ in runs], [c for _, c in runs]
    return {"best_wall_s": round(min(wall), 3), "median_wall_s": round(float(np.median(wall)), 3),
            "best_cpu_s": round(min(cpu), 3), "runs_wall_s": [round(w, 3) for w in wall]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--findings", type=int, default=14)
    parser.add_argument("--patients", type=int, default=4_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2, help="torch and BLAS threads")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    images, positive, negative, labels, patients, texts, text_emb = synthetic(
        args.images, args.findings, args.patients, args.dim
    )
    findings = (FINDINGS * (args.findings // len(FINDINGS) + 1))[: args.findings]
    load_start = os.getloadavg()
    started = time.perf_counter()
    parts: dict[str, list[tuple[float, float]]] = {"probabilities": [], "score_zeroshot": [], "retrieval": []}
    timed: dict = {}
    steps = (
        ("probabilities", lambda: zeroshot_probabilities(images, positive, negative, normalize=True)),
        ("score_zeroshot", lambda: score_zeroshot(timed["probabilities"], labels, patients, findings,
                                                  n_resamples=args.resamples, seed=0)),
        ("retrieval", lambda: retrieval_metrics(images, text_emb, texts)),
    )  # fmt: skip
    with threadpool_limits(limits=args.threads):  # numpy's BLAS (retrieval's matrix products)
        for _ in range(args.repeats):
            for name, call in steps:
                wall, cpu = time.perf_counter(), time.process_time()
                timed[name] = call()
                parts[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    metrics, retrieval = timed["score_zeroshot"], timed["retrieval"]

    parts["total"] = [tuple(map(sum, zip(*(parts[name][r] for name in list(parts)))))
                      for r in range(args.repeats)]  # fmt: skip
    summary = {name: stats(runs) for name, runs in parts.items()}
    i2t, t2i = retrieval["image_to_text"], retrieval["text_to_image"]
    out = {
        "claim": "zero-shot (1,000 patient resamples) + retrieval scoring of 10,000 images x 14 findings <= 10 s",
        "measured": stamp(),
        "command": command_line(Path(__file__).name),
        "shape": {"images": args.images, "findings": args.findings, "patients": len(np.unique(patients)),
                  "dim": args.dim, "resamples": args.resamples, "unique_texts": retrieval["n_unique_texts"],
                  "positive_share": round(float((labels == 1).mean()), 3)},  # fmt: skip
        "threads": args.threads,
        "timings": summary,
        "check": {"macro_auroc": metrics.macro_auroc, "macro_auroc_ci": metrics.macro_auroc_ci,
                  "n_evaluable": metrics.n_evaluable, "i2t_r10": i2t["recall"][2],
                  "t2i_r10": t2i["recall"][2]},  # fmt: skip
        "machine": machine_info(load_average_start=load_start, load_average_end=os.getloadavg(),
                                blas=[(i["internal_api"], i.get("architecture"))
                                      for i in threadpool_info()]),  # fmt: skip
        "total_wall_s": round(time.perf_counter() - started, 1),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    earlier = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    key = f"{args.images}_images_{args.threads}_threads"  # a run replaces only its own entry
    runs = {k: v for k, v in (earlier.get("runs") or {}).items() if k != key}
    RESULTS.write_text(json.dumps({"runs": {**runs, key: out}}, indent=2) + "\n")

    shape = out["shape"]
    print(f"{shape['images']:,} images x {shape['findings']} findings, D={shape['dim']}, {shape['patients']:,} "
          f"patients, {shape['resamples']} resamples, {shape['unique_texts']:,} unique texts; "
          f"{args.threads} thread(s)")  # fmt: skip
    print(f"{'part':<44} {'best wall s':>11} {'median':>8} {'CPU s':>7}")
    labels_ = {"probabilities": "zero-shot probabilities (softmax of pairs)",
               "score_zeroshot": "AUROC/AUPRC + patient bootstrap CIs",
               "retrieval": "retrieval, both directions"}  # fmt: skip
    for name, label in labels_.items():
        s = summary[name]
        print(f"{label:<44} {s['best_wall_s']:>11.2f} {s['median_wall_s']:>8.2f} {s['best_cpu_s']:>7.2f}")
    total = summary["total"]
    print(f"{'total':<44} {total['best_wall_s']:>11.2f} {total['median_wall_s']:>8.2f} {total['best_cpu_s']:>7.2f}")
    print(f"macro AUROC {metrics.macro_auroc:.3f} [{metrics.macro_auroc_ci[0]:.3f}, {metrics.macro_auroc_ci[1]:.3f}]; "
          f"R@10 i2t {i2t['recall'][2]['recall']:.3f} (random {i2t['recall'][2]['random']:.4f}), "
          f"t2i {t2i['recall'][2]['recall']:.3f} (random {t2i['recall'][2]['random']:.4f})")  # fmt: skip
    print(f"machine: {out['machine']['cpu']}, {os.cpu_count()} cores, load average {load_start[0]:.1f} at start, "
          f"{os.getloadavg()[0]:.1f} at end; wrote {RESULTS}")  # fmt: skip


if __name__ == "__main__":
    main()
