"""Phantom reports: labels follow the text, negations, hedges, laterality, variety, comparisons."""

from __future__ import annotations

import re

import numpy as np
import pytest

from greenfm.data.phantoms import CT_FINDING_IDS, CXR_FINDING_IDS, get_site
from greenfm.data.phantoms.course import Lesion
from greenfm.data.phantoms.cxr import cxr_patient
from greenfm.data.phantoms.phrases_ct import CT_STYLE
from greenfm.data.phantoms.phrases_cxr import CXR_STYLE
from greenfm.data.phantoms.reading import Reading, read_finding
from greenfm.data.phantoms.reports import ReportContext, write_report

MENTIONS = {
    "cardiomegaly": r"cardiomegaly|heart|cardiac",
    "pleural_effusion": r"effusion|costophrenic",
    "pneumothorax": r"pneumothorax|pleural line",
    "consolidation": r"consolidation|opacity|airspace",
    "lung_nodule": r"nodul",
}
HEDGES = r"possibl|cannot be|questionable|may |equivocal|versus|borderline|upper limit|uncertain|subtle|" \
         r"difficult|indeterminate|exaggerated|vague|faint"


@pytest.fixture(scope="module")
def rows():
    out = []
    # A high reader-error rate, so that misses, hedges and false findings are all exercised.
    for i in range(110):
        rng = np.random.default_rng([7, i])
        out += [row for row, _ in cxr_patient(rng, f"p{i}", int(rng.integers(1, 5)), get_site("B"), 32,
                                               reader_error=0.2)]
    return out


def test_positive_labels_are_stated_in_the_report(rows):
    for name in CXR_FINDING_IDS:
        positives = [r for r in rows if r[name] == 1]
        assert positives, name
        for row in positives:
            assert re.search(MENTIONS[name], row["report"], re.I), (name, row["report"])
            # A definite statement is wrong only where a reader error is flagged.
            assert row[f"meta_true_{name}"] == 1 or row[f"meta_reader_error_{name}"] == 1


def test_hedged_labels_come_with_hedging_words_and_include_false_alarms(rows):
    hedged = [(r, name) for r in rows for name in CXR_FINDING_IDS if r[name] == -1]
    assert len(hedged) > 20
    for row, name in hedged:
        assert re.search(HEDGES, row["report"], re.I), (name, row["report"])
    truths = {row[f"meta_true_{name}"] for row, name in hedged}
    assert truths == {0, 1}  # hedges on drawn lesions and on mimics
    assert all(row[f"meta_reader_error_{name}"] == 1 for row, name in hedged)  # every hedge is a reader error


def test_negations_for_absent_findings(rows):
    for phrase, name in (("No pneumothorax", "pneumothorax"), ("No pleural effusion", "pleural_effusion")):
        negated = [r for r in rows if phrase.lower() in r["report"].lower()]
        assert len(negated) > 20, phrase
        assert all(r[name] == 0 for r in negated)
    clear = [r for r in rows if re.search(r"\blungs are clear|clear lungs", r["report"], re.I)]
    assert clear and all(r["consolidation"] == 0 and r["lung_nodule"] == 0 for r in clear)
    normal = [r for r in rows if all(r[f"meta_true_{n}"] == 0 for n in CXR_FINDING_IDS) and not r["meta_reader_error"]]
    assert sum("No acute" in r["report"] or "Normal chest" in r["report"] for r in normal) > len(normal) / 3


def test_labels_equal_the_truth_except_for_flagged_reader_errors(rows):
    missed = [r for r in rows for n in CXR_FINDING_IDS if r[f"meta_true_{n}"] == 1 and r[n] == 0]
    assert missed  # the reader misses some drawn lesions ...
    for r in rows:
        flagged = 0
        for n in CXR_FINDING_IDS:
            wrong = r[n] != r[f"meta_true_{n}"]
            assert wrong == bool(r[f"meta_reader_error_{n}"]), (n, r)  # ... and every miss is flagged
            flagged += wrong
        assert r["meta_reader_error"] == flagged
    rate = np.mean([r[f"meta_reader_error_{n}"] for r in rows for n in CXR_FINDING_IDS])
    assert 0.13 < rate < 0.27  # the configured rate, 0.2


def test_laterality_size_words_variety_and_comparisons(rows):
    effusions = [r["report"] for r in rows if r["pleural_effusion"] == 1]
    assert all(re.search(r"right|left|bilateral", text, re.I) for text in effusions)
    nodules = [r["report"] for r in rows if r["lung_nodule"] == 1]
    assert any(re.search(r"\d+ mm", text) for text in nodules)
    reports = [r["report"] for r in rows]
    assert len(set(reports)) > 0.8 * len(reports)
    assert any(t.startswith("EXAMINATION:") for t in reports) and any(t.startswith("FINDINGS:") for t in reports)
    assert any("Impression:" in t for t in reports)
    later = [r["report"] for r in rows if r["meta_study_index"] > 1]
    assert any(re.search(r"prior|earlier|compared|ago", t, re.I) for t in later)
    assert any(re.search(r"catheter|central line|ECG", t) for t in reports)  # site B: lines and leads


def test_reader_rule_and_report_for_handmade_readings():
    rng = np.random.default_rng(0)
    obvious = Lesion("pleural_effusion", side="left", grade="large", size_mm=90, contrast=1.0)
    statuses = {read_finding(rng, "pleural_effusion", [obvious], reader_error=0.0).status for _ in range(200)}
    assert statuses == {"present"}  # no reader error: the truth
    assert {read_finding(rng, "pleural_effusion", [], reader_error=0.0, mimic=obvious).status
            for _ in range(200)} == {"absent"}
    faint = Lesion("lung_nodule", side="right", zone="upper", grade="faint", size_mm=13, contrast=0.8)
    statuses = [read_finding(rng, "lung_nodule", [faint], reader_error=0.3).status for _ in range(600)]
    assert {"present", "uncertain", "absent"} <= set(statuses)
    assert 0.22 < np.mean([s != "present" for s in statuses]) < 0.38
    # The stream advances by the same two draws whatever the rate, so images do not depend on it.
    a, b = np.random.default_rng(1), np.random.default_rng(1)
    read_finding(a, "lung_nodule", [faint], reader_error=0.0)
    read_finding(b, "lung_nodule", [faint], reader_error=1.0)
    assert a.random() == b.random()
    readings = {name: Reading(name, "absent") for name in CXR_FINDING_IDS}
    readings["lung_nodule"] = Reading("lung_nodule", "uncertain", (faint,))
    text, marked = write_report(rng, readings, CXR_STYLE, ReportContext())
    assert re.search(r"right upper zone", text) and marked["lung_nodule"].mentioned
    assert marked["lung_nodule"].label == -1 and marked["pneumothorax"].label == 0


def test_ct_phrase_book_covers_every_ct_finding_and_status():
    rng = np.random.default_rng(1)
    lesion = Lesion("x", side="left", zone="left lower lobe", grade="moderate", size_mm=8, detail="air bronchograms")
    for name in CT_FINDING_IDS:
        for status in ("present", "uncertain", "absent"):
            readings = {n: Reading(n, "absent") for n in CT_FINDING_IDS}
            readings[name] = Reading(name, status, () if status == "absent" else (lesion,))
            text, _ = write_report(rng, readings, CT_STYLE, ReportContext(prior_days=30))
            assert "{" not in text and not any("  " in line for line in text.splitlines())
            assert not re.search(r"\ba 8", text)
            if status == "present":
                assert re.search(r"nodule|effusion|consolidation|emphysema|cardiomegaly|enlarged", text, re.I)
