"""Rule labeler vs hand labels on real clinical notes.

Claim: per-finding precision / recall / F1 of the rule labeler (chexpert14)
against hand labels of covid_cxr_notes notes (tests/labeling/data; protocol in
its README): a 50-note development sample and a 30-note held-out sample.
Reference -1 and blank are not compared; predicted -1 and blank count as
negative (see greenfm.labeling.agreement).

    .venv/bin/python benchmarks/bench_covid_notes_agreement.py

Prints a table and writes benchmarks/results/covid_notes_agreement.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from greenfm.labeling import RuleLabeler, compare_labels, micro_average

ROOT = Path(__file__).resolve().parents[1]
NOTES = ROOT.parent / "shared" / "data" / "covid_cxr_notes" / "metadata.csv"
HAND = ROOT / "tests" / "labeling" / "data"
RESULTS = ROOT / "benchmarks" / "results" / "covid_notes_agreement.json"
SAMPLES = {"development_50": "covid_notes_hand_labels.csv", "heldout_30": "covid_notes_hand_labels_heldout.csv"}


def main() -> None:
    if not NOTES.is_file():
        sys.exit(f"{NOTES} is absent: this benchmark needs ../shared/data")
    meta = pd.read_csv(NOTES).drop_duplicates("filename").set_index("filename")
    labeler = RuleLabeler("chexpert14")
    result = {"claim": "rule labeler vs one reader's hand labels, covid_cxr_notes clinical notes",
              "vocabulary": labeler.vocabulary.tag, "samples": {}}
    for name, file in SAMPLES.items():
        hand = pd.read_csv(HAND / file)
        predicted = labeler.label_many(meta.loc[hand["filename"], "clinical_notes"].tolist()).frame()
        table = compare_labels(predicted, hand, [c for c in hand.columns if c != "filename"])
        micro = micro_average(table)
        result["samples"][name] = {"notes": len(hand), "micro": micro,
                                   "per_finding": json.loads(table.to_json(orient="records"))}
        shown = table[table["n"] > 0]
        print(f"\n{name}: {len(hand)} notes")
        print(shown[["finding", "n", "support", "tp", "fp", "fn", "precision", "recall", "f1", "exact"]]
              .to_string(index=False, float_format=lambda x: f"{x:.2f}"))
        print(f"micro: precision {micro['precision']:.3f} recall {micro['recall']:.3f} f1 {micro['f1']:.3f} "
              f"(support {micro['support']}); exact code agreement {micro['exact']:.3f} over {micro['n']} labels")
    result["command"] = "python benchmarks/bench_covid_notes_agreement.py"
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
