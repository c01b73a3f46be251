"""The rule labeler on real clinical notes (../shared/data/covid_cxr_notes) against hand labels.

The hand labels (tests/labeling/data, protocol in its README) cover 50 notes
used while developing the rules and 30 held-out notes labelled before the
labeler was run on them. Thresholds sit below the measured values
(benchmarks/bench_covid_notes_agreement.py) to catch regressions, not to tune.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from greenfm.labeling import RuleLabeler, compare_labels, micro_average

HAND = Path(__file__).resolve().parent / "data"


def agreement(shared_data: Path, name: str) -> dict[str, float]:
    hand = pd.read_csv(HAND / name)
    meta = pd.read_csv(shared_data / "covid_cxr_notes" / "metadata.csv").drop_duplicates("filename")
    notes = meta.set_index("filename").loc[hand["filename"], "clinical_notes"].tolist()
    predicted = RuleLabeler("chexpert14").label_many(notes).frame()
    return micro_average(compare_labels(predicted, hand, [c for c in hand.columns if c != "filename"]))


@pytest.mark.parametrize(("name", "min_f1"), [("covid_notes_hand_labels.csv", 0.85),
                                             ("covid_notes_hand_labels_heldout.csv", 0.85)])
def test_agrees_with_hand_labels(shared_data, name, min_f1):
    micro = agreement(shared_data, name)
    assert micro["support"] >= 30
    assert micro["f1"] >= min_f1 and micro["precision"] >= 0.85


def test_every_note_is_read(shared_data):
    notes = pd.read_csv(shared_data / "covid_cxr_notes" / "metadata.csv")["clinical_notes"].tolist()
    table = RuleLabeler("chexpert14").label_many(notes)
    assert not table.failed.any(), table.issue_counts()
    labeled = ~pd.isna(table.frame()).all(axis=1)
    assert labeled.mean() > 0.8, "most notes mention at least one finding"
