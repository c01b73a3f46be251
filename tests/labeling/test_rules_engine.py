"""Rule labeler behaviour beyond single sentences: odd text, evidence, batches, other vocabularies."""

from __future__ import annotations

import math

import numpy as np
import pytest

from greenfm.labeling import RuleLabeler
from greenfm.labeling.phrases import phrase_pattern
from greenfm.labeling.text import clean_report, sentence_spans


@pytest.fixture(scope="module")
def labeler() -> RuleLabeler:
    return RuleLabeler("chexpert14")


@pytest.mark.parametrize(
    ("report", "issue"),
    [
        (None, "empty"), (float("nan"), "empty"), ("", "empty"), ("   \n\t ", "empty"),
        ("Derrame pleural derecho y consolidación en el lóbulo inferior con broncograma aéreo.", "non_english"),
        ("右侧胸腔积液，左肺下叶实变。", "non_english"),
        ("Линии и трубки на месте, без пневмоторакса.", "non_english"),
    ],
)
def test_unreadable_reports_are_blank_and_counted(labeler, report, issue):
    result = labeler.label(report)
    assert all(math.isnan(v) for v in result.codes.values())
    assert issue in result.issues and result.failed


def test_html_odd_encodings_and_control_characters_do_not_crash(labeler):
    raw = b"<div>No pneumothorax.&nbsp;<b>Large</b> left pleural effusion.</div>" + b"\xff\xfe\x00"
    result = labeler.label(raw)
    assert result.codes["pneumothorax"] == 0 and result.codes["pleural_effusion"] == 1
    assert {"html", "decode"} <= result.issues and not result.failed
    assert labeler.label("No\x00 effusion.\x07").codes["pleural_effusion"] == 0


def test_very_long_reports_are_cut_and_counted():
    labeler = RuleLabeler("chexpert14", max_chars=2000)
    report = "Mild cardiomegaly. " + "The osseous structures are intact. " * 5000 + "Large pneumothorax."
    result = labeler.label(report)
    assert "long" in result.issues and result.codes["cardiomegaly"] == 1
    assert math.isnan(result.codes["pneumothorax"]), "text after the cut is not read"


def test_evidence_points_at_the_deciding_sentence(labeler):
    report = "Heart size is normal.  No pneumothorax. Possible small right effusion."
    result = labeler.label(report)
    text = clean_report(report).text
    effusion = result.evidence["pleural_effusion"]
    assert effusion.code == -1 and effusion.cue == "possible" and effusion.mention == "effusion"
    assert text[effusion.start : effusion.end].strip() == effusion.sentence == "Possible small right effusion."
    assert result.evidence["cardiomegaly"].cue == "normal statement"
    assert result.evidence["pneumothorax"].cue == "no"


def test_positive_beats_uncertain_beats_negative(labeler):
    assert labeler.label("No effusion. Possible effusion. Small effusion.").codes["pleural_effusion"] == 1
    assert labeler.label("No effusion. Possible effusion.").codes["pleural_effusion"] == -1
    assert labeler.label("Possible effusion. No effusion.").codes["pleural_effusion"] == -1
    evidence = labeler.label("No effusion. Small effusion. Large effusion.").evidence["pleural_effusion"]
    assert evidence.sentence == "Small effusion.", "the first mention with the winning code is the evidence"


def test_batch_labels_match_single_reports(labeler):
    reports = ["Mild cardiomegaly.", "", "No pneumothorax.", "Possible pneumonia."]
    table = labeler.label_many(reports)
    assert table.codes.shape == (4, 14) and table.findings == labeler.vocabulary.ids
    for i, r in enumerate(reports):
        np.testing.assert_array_equal(table.codes[i], np.array(labeler(r), dtype=np.float32))
    assert table.failed.tolist() == [False, True, False, False]
    assert table.issue_counts() == {"empty": 1}
    frame = table.evidence_frame(["a", "b", "c", "d"])
    assert set(frame["id"]) == {"a", "c", "d"} and (frame["sentence"] != "").all()


@pytest.mark.parametrize(
    ("phrase", "text", "matches"),
    [
        ("opacity", "opacities", True), ("mass", "masses", True), ("bulla", "bullae", True),
        ("ground glass", "ground-glass", True), ("port-a-cath", "portacath", True),
        ("port-a-cath", "port a cath", True), ("effusion", "effusions", True), ("effusion", "effusional", False),
    ],
)
def test_phrase_variants(phrase, text, matches):
    import re

    assert bool(re.fullmatch(phrase_pattern(phrase), text)) is matches


def test_sentences_split_on_punctuation_headings_and_bullets_not_abbreviations():
    text = "FINDINGS: No effusion vs. atelectasis; mild edema.\n- Line in place\n\nIMPRESSION: 1.5 cm nodule"
    pieces = [text[s:e].strip() for s, e in sentence_spans(text)]
    assert pieces == ["FINDINGS:", "No effusion vs. atelectasis;", "mild edema.", "- Line in place", "IMPRESSION:",
                      "1.5 cm nodule"]


@pytest.mark.parametrize(
    ("vocab", "report", "expected"),
    [
        ("nih14", "Small left effusion. No pneumothorax. Hiatal hernia.",
         {"effusion": 1, "pneumothorax": 0, "hernia": 1, "no_finding": 0}),
        ("ct-rate-18", ("Coronary artery calcification. No pericardial effusion. Bilateral pleural effusion. "
                        "Ground-glass opacities in the right lower lobe."),
         {"coronary_artery_wall_calcification": 1, "pericardial_effusion": 0, "pleural_effusion": 1,
          "lung_opacity": 1, "arterial_wall_calcification": math.nan}),
        ("merlin-30", ("Status post cholecystectomy. Hepatic steatosis. No free air. Small amount of ascites. "
                       "Nonobstructing renal cyst."),
         {"surgically_absent_gallbladder": 1, "hepatic_steatosis": 1, "free_air": 0, "ascites": 1, "renal_cyst": 1}),
    ],
)
def test_other_vocabularies(vocab, report, expected):
    codes = RuleLabeler(vocab).label(report).codes
    for finding, code in expected.items():
        assert (math.isnan(codes[finding]) and math.isnan(code)) or codes[finding] == code, finding
