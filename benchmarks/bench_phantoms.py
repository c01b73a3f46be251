"""Phantom generation speed, side by side with an earlier version, and a raw-pixel probe.

Claims: (1) a few thousand 128 px radiographs (images, reports, manifest) take
seconds (the aim is 500 images/s on two cores; see BENCHMARKS.md for what is
measured); (2) a linear probe on 32 x 32 thumbnails already separates cardiomegaly,
effusion and pneumothorax (a CNN does far better: ``bench_phantom_learnability.py``);
(3) nodules stand out from the anatomy at 64 px: a fixed matched filter (local
contrast against a 7 px median, averaged over 3 x 3 px, its maximum over the image)
tells a study with its nodule from the same study drawn without it, by nodule size,
side by side with the baseline revision's nodules.

    .venv/bin/python benchmarks/bench_phantoms.py [--patients 800 --probe-patients 600 --baseline-rev HEAD]
    .venv/bin/python benchmarks/bench_phantoms.py --only-conspicuity   # (3) alone, seconds

``--baseline-rev`` times the generator of that git revision (extracted with
``git archive`` into a temporary package) in interleaved rounds with the current
one, on the same machine at the same load; ``--baseline-rev none`` skips it.
Prints tables and writes benchmarks/results/phantoms.json. Timings depend on the
machine and on what else runs on it: the load average is recorded.
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
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
CONSPICUITY = RESULTS.with_name("phantom_nodule_conspicuity.json")


def timed(folder: Path, generate=generate_phantoms, **kwargs) -> dict:
    """Generate once; wall seconds, CPU seconds of this process and its workers, and counts."""
    shutil.rmtree(folder, ignore_errors=True)
    wall, cpu = time.perf_counter(), _cpu()
    manifest = generate(folder, **kwargs)
    wall, cpu = time.perf_counter() - wall, _cpu() - cpu
    n = len(pd.read_csv(manifest))
    return {**{k: v for k, v in kwargs.items() if k != "site"}, "images": n, "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2), "images_per_s": round(n / wall, 1), "cpu_ms_per_image": round(1e3 * cpu / n, 2)}


def baseline_generator(rev: str, into: Path):
    """``generate_phantoms`` of git revision ``rev``, imported as a separate package from ``into``."""
    package = "src/greenfm/data/phantoms"
    archive = subprocess.run(["git", "archive", rev, package], check=True, capture_output=True,
                             cwd=Path(__file__).resolve().parents[1]).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    target = into / "phantoms_baseline"
    (into / package).rename(target)
    for path in target.glob("*.py"):
        path.write_text(path.read_text().replace("greenfm.data.phantoms", "phantoms_baseline"))
    sys.path.insert(0, str(into))
    return importlib.import_module("phantoms_baseline").generate_phantoms


def side_by_side(root: Path, baseline, patients: int, size: int, workers: int, rounds: int) -> dict:
    """Interleaved rounds of the baseline and the current generator; the median round of each."""
    runs = {"baseline": [], "current": []}
    for _ in range(rounds):
        for name, generate in (("baseline", baseline), ("current", generate_phantoms)):
            runs[name].append(timed(root / f"sbs{name}", generate, kind="cxr", n_patients=patients, size=size,
                                    workers=workers))
    out = {"size": size, "workers": workers, "rounds": rounds}
    for name, rs in runs.items():
        rates = sorted(r["images_per_s"] for r in rs)
        out[name] = {"images": rs[0]["images"], "images_per_s_median": rates[len(rates) // 2],
                     "images_per_s": [r["images_per_s"] for r in rs],
                     "cpu_ms_per_image": sorted(r["cpu_ms_per_image"] for r in rs)[len(rs) // 2]}
    out["speedup"] = round(out["current"]["images_per_s_median"] / out["baseline"]["images_per_s_median"], 2)
    return out


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


def nodule_conspicuity(package: str, n: int = 400, seed: int = 5) -> dict:
    """Matched-filter AUROC of nodule presence at 64 px (site A): each study drawn with and without its nodule."""
    from dataclasses import replace

    from scipy.ndimage import median_filter, uniform_filter

    cxr = importlib.import_module(f"{package}.cxr")
    draw = importlib.import_module(f"{package}.cxr_draw")
    course_mod = importlib.import_module(f"{package}.course")
    site = importlib.import_module(f"{package}.sites").get_site("A")
    column = [spec.name for spec in course_mod.CXR_FINDINGS].index("lung_nodule")
    rng = np.random.default_rng(seed)
    stats, present, sizes = [], [], []
    for i in range(n):
        course = np.zeros((1, len(course_mod.CXR_FINDINGS)), dtype=bool)
        course[0, column] = True
        study = cxr.plan_patient(rng, course, site)[0]
        size = max(d for _, _, d, _ in study.nodules)
        if i % 2:
            study = replace(study, nodules=())
        image = draw.render_cxr(study, site, 64).astype(np.float32)
        local = image - median_filter(image, 7)
        stats.append(float(uniform_filter(local, 3).max()))
        present.append(i % 2 == 0)
        sizes.append(size)
    stats, present, sizes = np.array(stats), np.array(present), np.array(sizes)
    cuts = np.quantile(sizes[present], [1 / 3, 2 / 3])
    bins = np.digitize(sizes, cuts)
    tertiles = {label: round(float(roc_auc_score(present[~present | (bins == t)], stats[~present | (bins == t)])), 3)
                for t, label in enumerate(("small", "middle", "large"))}
    return {"package": package, "studies": n, "auroc": round(float(roc_auc_score(present, stats)), 3),
            "by_size_tertile": tertiles, "size_mm": [round(float(sizes[present].min()), 1),
                                                     round(float(sizes[present].max()), 1)],
            "size_cuts_mm": [round(float(c), 1) for c in cuts]}


def print_conspicuity(rows: list[dict]) -> None:
    print("\nnodule conspicuity at 64 px, site A: matched-filter AUROC, nodule drawn vs not (same study)")
    print(f"  {'generator':22s} {'AUROC':>6s} {'small':>6s} {'middle':>6s} {'large':>6s}  diameter mm (cuts)")
    for r in rows:
        t = r["by_size_tertile"]
        print(f"  {r['package']:22s} {r['auroc']:6.3f} {t['small']:6.3f} {t['middle']:6.3f} {t['large']:6.3f}  "
              f"{r['size_mm']} ({r['size_cuts_mm']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=800)
    parser.add_argument("--probe-patients", type=int, default=600)
    parser.add_argument("--ct-patients", type=int, default=12)
    parser.add_argument("--baseline-rev", default="HEAD", help="git revision to compare with, or 'none'")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the side-by-side timing")
    parser.add_argument("--only-conspicuity", action="store_true", help="only the nodule conspicuity check (3)")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if args.only_conspicuity:
        with tempfile.TemporaryDirectory() as tmp:
            packages = ["greenfm.data.phantoms"]
            if args.baseline_rev != "none":
                baseline_generator(args.baseline_rev, Path(tmp) / "baseline")
                packages.insert(0, "phantoms_baseline")
            rows = [nodule_conspicuity(p) for p in packages]
        for row, name in zip(rows, (["baseline " + args.baseline_rev] if len(rows) == 2 else []) + ["current"],
                             strict=True):
            row["generator"] = name
        out = CONSPICUITY
        out.write_text(json.dumps({"baseline_rev": args.baseline_rev, "machine": {"cores": cores, "load_average": [
            round(v, 2) for v in os.getloadavg()]}, "nodule_conspicuity": rows}, indent=2) + "\n")
        print_conspicuity(rows)
        print(f"\nwrote {out}")
        return
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_phantoms(root / "warm", n_patients=2, size=64)  # imports and caches out of the timings
        sbs = []
        if args.baseline_rev != "none":
            baseline = baseline_generator(args.baseline_rev, root / "baseline")
            baseline(root / "warm", n_patients=2, size=64)
            sbs = [side_by_side(root, baseline, args.patients, 128, workers, args.rounds)
                   for workers in sorted({1, cores})]
        for size in (64, 128, 224):
            for workers in sorted({1, cores}):
                runs.append(timed(root / f"cxr{size}", kind="cxr", n_patients=args.patients, size=size,
                                  workers=workers))
        for size in (64, 96):
            runs.append(timed(root / f"ct{size}", kind="ct", n_patients=args.ct_patients, size=size, workers=cores))
        probes = [probe(root / f"probe{site}", args.probe_patients, site) for site in ("A", "B")]
    result = {"machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                          "cores": cores, "load_average": [round(v, 2) for v in os.getloadavg()]},
              "side_by_side": {"baseline_rev": args.baseline_rev, "runs": sbs}, "generation": runs,
              "raw_pixel_probe": probes}
    if not sbs and RESULTS.is_file():  # --baseline-rev none keeps the last side-by-side figures, marked as such
        earlier = json.loads(RESULTS.read_text()).get("side_by_side", {})
        if earlier.get("runs"):
            result["side_by_side"] = {**earlier, "kept_from_an_earlier_run": True}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")

    print(f"{'kind':5s} {'size':>5s} {'workers':>7s} {'images':>7s} {'wall s':>7s} {'img/s':>7s} {'cpu ms/img':>10s}")
    for r in runs:
        print(f"{r['kind']:5s} {r['size']:5d} {r['workers']:7d} {r['images']:7d} {r['wall_s']:7.1f} "
              f"{r['images_per_s']:7.1f} {r['cpu_ms_per_image']:10.2f}")
    if sbs:
        print(f"\nside by side with {args.baseline_rev} (128 px, {args.rounds} interleaved rounds, median images/s)")
        print(f"  {'workers':>7s} {'baseline':>9s} {'current':>9s} {'speedup':>8s}")
        for r in sbs:
            print(f"  {r['workers']:7d} {r['baseline']['images_per_s_median']:9.1f} "
                  f"{r['current']['images_per_s_median']:9.1f} {r['speedup']:7.2f}x")
    for p in probes:
        print(f"\nraw-pixel probe, site {p['site']} ({p['images']} images, 32 x 32 thumbnails, AUROC)")
        print(f"  {'finding':18s} {'prev':>6s} {'truth':>6s} {'report':>7s}")
        for name, v in p["findings"].items():
            print(f"  {name:18s} {v['prevalence']:6.3f} {v['auroc_truth']:6.3f} {v['auroc_report']:7.3f}")
    print(f"\nload average {result['machine']['load_average']} on {cores} cores; wrote {RESULTS}")


if __name__ == "__main__":
    main()
