"""Rule labeler throughput on one core.

Claim: the rule labeler reads >= 2,000 typical 60-word chest radiograph reports
per second on one core with the 14 CheXpert findings. Reports are built from a
fixed bank of report sentences (seeded); the real clinical notes of
../shared/data/covid_cxr_notes are timed too when present. Each timing is the
best of ``--repeats`` runs in this one process; both wall-clock and CPU time
are reported because a shared machine's wall clock includes other people's work.

    .venv/bin/python benchmarks/bench_rule_labeler.py [--reports 5000 --words 60 --repeats 3]

Prints a table and writes benchmarks/results/rule_labeler.json.
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

from bench_common import cpu_model
from greenfm.labeling import RuleLabeler

RESULTS = Path(__file__).resolve().parent / "results" / "rule_labeler.json"
NOTES = Path(__file__).resolve().parents[2] / "shared" / "data" / "covid_cxr_notes" / "metadata.csv"

SENTENCES = [
    "The heart size is normal.", "The cardiomediastinal silhouette is within normal limits.",
    "There is no focal consolidation, pleural effusion or pneumothorax.", "Mild bibasilar atelectasis.",
    "Endotracheal tube terminates 4 cm above the carina.", "Possible small left pleural effusion.",
    "No acute osseous abnormality.", "The lungs are otherwise clear.", "Stable mild cardiomegaly.",
    "Right lower lobe opacity may represent pneumonia in the appropriate clinical setting.",
    "Nasogastric tube courses below the diaphragm and out of view.", "No pulmonary edema.",
    "Degenerative changes of the thoracic spine are noted.", "Compared with the prior study there is interval improvement.",
    "Left internal jugular central venous catheter tip projects over the superior vena cava.",
    "Patchy airspace opacities in both lower lobes, likely atelectasis, although infection cannot be excluded.",
    "There is a small right apical pneumothorax which has decreased in size.", "No change in the moderate left pleural effusion.",
    "Mild pulmonary vascular congestion without frank edema.", "Healed left rib fractures.",
    "A 6 mm nodule in the right upper lobe is unchanged.", "The mediastinal contours are normal.",
    "Low lung volumes with crowding of the bronchovascular markings.", "Sternotomy wires are intact.",
    "No evidence of free air under the diaphragm.", "Blunting of the right costophrenic angle.",
    "Interval removal of the right chest tube without pneumothorax.", "Calcified granuloma in the left lower lobe.",
]


def typical_reports(n: int, words: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    reports = []
    for _ in range(n):
        parts, count = [], 0
        while count < words:
            s = SENTENCES[rng.integers(len(SENTENCES))]
            parts.append(s)
            count += len(s.split())
        reports.append(" ".join(parts))
    return reports


def timed(labeler: RuleLabeler, reports: list[str], repeats: int) -> dict:
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        labeler.label_many(reports)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    n = len(reports)
    return {
        "reports": n,
        "mean_words": round(float(np.mean([len(r.split()) for r in reports])), 1),
        "wall_reports_per_s": round(n / min(walls), 1),
        "cpu_reports_per_s": round(n / min(cpus), 1),
        "wall_runs_s": [round(w, 3) for w in walls],
        "cpu_runs_s": [round(c, 3) for c in cpus],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=5000)
    parser.add_argument("--words", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vocab", default="chexpert14")
    args = parser.parse_args()

    labeler = RuleLabeler(args.vocab)
    labeler.label_many(typical_reports(50, args.words, seed=1))  # warm-up
    rows = {"typical": timed(labeler, typical_reports(args.reports, args.words), args.repeats)}
    if NOTES.is_file():
        import pandas as pd

        notes = pd.read_csv(NOTES)["clinical_notes"].fillna("").tolist()
        rows["covid_cxr_notes"] = timed(labeler, notes, args.repeats)

    result = {
        "claim": f"rule labeler, one core, {len(labeler.vocabulary)} findings ({args.vocab}), >= 2000 typical reports/s",
        "vocabulary": labeler.vocabulary.tag,
        "results": rows,
        "machine": {
            "platform": platform.platform(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "python": sys.version.split()[0], "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        },
        "command": "python benchmarks/bench_rule_labeler.py " + " ".join(sys.argv[1:]),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")

    print(f"{'reports':<18}{'n':>7}{'words':>8}{'wall rep/s':>12}{'cpu rep/s':>12}")
    for name, r in rows.items():
        print(f"{name:<18}{r['reports']:>7}{r['mean_words']:>8}{r['wall_reports_per_s']:>12}{r['cpu_reports_per_s']:>12}")
    print(f"machine: {result['machine']['cpu']} x{os.cpu_count()}, load {result['machine']['load_average_1m_at_end']}")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
