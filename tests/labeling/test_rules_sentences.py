"""Table-driven checks of the rule labeler on hand-written tricky sentences (chexpert14).

Each case lists the expected code of every finding the sentence speaks to;
every other finding (No Finding aside, unless listed) must stay blank.
"""

from __future__ import annotations

import math

import pytest

from greenfm.labeling import RuleLabeler

P, N, U = 1.0, 0.0, -1.0

CASES = [
    # negation and its scope over lists and conjunctions
    ("No pleural effusion or pneumothorax.", {"pleural_effusion": N, "pneumothorax": N}),
    ("No effusion but a large pneumothorax.", {"pleural_effusion": N, "pneumothorax": P}),
    ("No pleural effusion, a large right pneumothorax.", {"pleural_effusion": N, "pneumothorax": P}),
    ("No evidence of pleural effusion, pneumothorax, focal consolidation, or pulmonary edema.",
     {"pleural_effusion": N, "pneumothorax": N, "consolidation": N, "edema": N}),
    ("Neither effusion nor pneumothorax.", {"pleural_effusion": N, "pneumothorax": N}),
    ("There is no pneumothorax and a small left effusion is present.", {"pneumothorax": N, "pleural_effusion": P}),
    ("No pneumothorax is seen and the heart is enlarged.", {"pneumothorax": N, "cardiomegaly": P}),
    ("There is bibasilar atelectasis, but no focal consolidation.", {"atelectasis": P, "consolidation": N}),
    ("No consolidation, however there is a small left effusion.", {"consolidation": N, "pleural_effusion": P}),
    ("No focal airspace consolidation is identified, and there is no pleural effusion.",
     {"consolidation": N, "pleural_effusion": N}),
    ("Negative for pneumothorax.", {"pneumothorax": N}),
    ("Without evidence of pulmonary edema.", {"edema": N}),
    ("Lungs free of consolidation.", {"consolidation": N}),
    ("No definite pneumothorax.", {"pneumothorax": N}),
    ("No infiltrate.", {"lung_opacity": N}),
    ("No acute fracture.", {"fracture": N}),
    ("No suspicious pulmonary nodules or masses.", {"lung_lesion": N}),
    ("NO PNEUMOTHORAX. LARGE LEFT PLEURAL EFFUSION.", {"pneumothorax": N, "pleural_effusion": P}),
    # negation after the mention
    ("Pneumothorax is not seen.", {"pneumothorax": N}),
    ("Effusion or pneumothorax is not seen.", {"pleural_effusion": N, "pneumothorax": N}),
    ("The heart is enlarged and an effusion is not seen.", {"cardiomegaly": P, "pleural_effusion": N}),
    ("Pneumothorax is no longer visualized.", {"pneumothorax": N}),
    ("The previously seen pneumothorax has resolved.", {"pneumothorax": N}),
    ("Pneumothorax: none.", {"pneumothorax": N}),
    ("Resolved left pleural effusion.", {"pleural_effusion": N}),
    ("Interval resolution of the right lower lobe consolidation.", {"consolidation": N}),
    ("The right-sided chest tube has been removed.", {"support_devices": N}),
    ("Interval removal of the endotracheal tube.", {"support_devices": N}),
    # normal statements
    ("Heart size is normal.", {"cardiomegaly": N}),
    ("The heart is normal in size.", {"cardiomegaly": N}),
    ("The heart is not enlarged.", {"cardiomegaly": N}),
    ("The lungs are clear.", {"lung_opacity": N, "consolidation": N}),
    ("The cardiomediastinal silhouette is normal.", {"cardiomegaly": N, "enlarged_cardiomediastinum": N}),
    ("Lungs are clear except for a small nodule in the right upper lobe.",
     {"lung_opacity": N, "consolidation": N, "lung_lesion": P}),
    # uncertainty
    ("Possible small left pleural effusion.", {"pleural_effusion": U}),
    ("Possible effusion, no pneumothorax.", {"pleural_effusion": U, "pneumothorax": N}),
    ("Cannot exclude pneumonia.", {"pneumonia": U}),
    ("Pneumonia cannot be excluded.", {"pneumonia": U}),
    ("Right lower lobe opacity may represent atelectasis or pneumonia.",
     {"lung_opacity": P, "atelectasis": U, "pneumonia": U}),
    ("Left basilar opacity, likely atelectasis.", {"lung_opacity": P, "atelectasis": U}),
    ("Findings are suggestive of pulmonary edema.", {"edema": U}),
    ("Questionable small right apical pneumothorax.", {"pneumothorax": U}),
    ("Atelectasis versus consolidation in the left lower lobe.", {"atelectasis": U, "consolidation": U}),
    ("Multifocal opacities concerning for pneumonia.", {"lung_opacity": P, "pneumonia": U}),
    ("Borderline cardiomegaly.", {"cardiomegaly": U}),
    ("Evaluate for pneumonia.", {"pneumonia": U}),
    ("?pneumonia", {"pneumonia": U}),
    ("Effusion is unlikely.", {"pleural_effusion": U}),
    ("Opacity at the right base which could be atelectasis.", {"lung_opacity": P, "atelectasis": U}),
    ("Increased interstitial markings suggesting mild edema.", {"lung_opacity": P, "edema": U}),
    ("Findings may be due to fluid overload.", {"edema": U}),
    ("Possible early pneumonia in the left lower lobe; no effusion.", {"pneumonia": U, "pleural_effusion": N}),
    ("No findings to suggest pneumonia.", {"pneumonia": N}),
    ("Mass in the left upper lobe, suspicious for malignancy.", {"lung_lesion": P}),
    # positives, pseudo-negations, several mentions
    ("No change in the moderate right pleural effusion.", {"pleural_effusion": P}),
    ("Stable small bilateral pleural effusions.", {"pleural_effusion": P}),
    ("Small effusion on the right; no effusion on the left.", {"pleural_effusion": P}),
    ("There is a right pneumothorax, which has increased in size.", {"pneumothorax": P}),
    ("Mild cardiomegaly.", {"cardiomegaly": P}),
    ("Moderate pulmonary edema with small bilateral effusions.", {"edema": P, "pleural_effusion": P}),
    ("Ground-glass opacities in both lungs.", {"lung_opacity": P}),
    ("Pulmonary nodule in the right upper lobe.", {"lung_lesion": P}),
    ("Old healed right rib fractures.", {"fracture": P}),
    ("Pleural thickening at the left apex.", {"pleural_other": P}),
    ("Widened mediastinum.", {"enlarged_cardiomediastinum": P}),
    ("Patchy consolidation in the right lower lobe consistent with pneumonia.", {"consolidation": P, "pneumonia": P}),
    ("Low lung volumes with bibasilar atelectasis.", {"atelectasis": P}),
    ("Persistent left lower lobe collapse.", {"atelectasis": P}),
    ("Slight improvement of the alveolar consolidation.", {"consolidation": P}),
    ("Endotracheal tube terminates 4 cm above the carina.", {"support_devices": P}),
    ("The patient is intubated.", {"support_devices": P}),
    ("Pacemaker leads terminate in the right ventricle.", {"support_devices": P}),
    ("Small pericardial effusion.", {}),
    ("No pericardial effusion.", {}),
    ("<p>No pleural effusion.</p><br>Mild cardiomegaly.", {"pleural_effusion": N, "cardiomegaly": P}),
    # report structure: headings, indication sections
    ("INDICATION: Evaluate for pneumonia. FINDINGS: No pneumonia.", {"pneumonia": N}),
    ("Clinical history: rule out pneumothorax.\nFindings: Small left pneumothorax.", {"pneumothorax": P}),
    ("COMPARISON: None. No pleural effusion.", {"pleural_effusion": N}),
    ("Findings: no pneumothorax.", {"pneumothorax": N}),
    # no finding
    ("No acute cardiopulmonary process.", {"no_finding": P}),
    ("Normal chest radiograph.", {"no_finding": P}),
    ("No pneumothorax. Heart size is normal.", {"no_finding": P, "pneumothorax": N, "cardiomegaly": N}),
    ("No acute cardiopulmonary process. Small left pleural effusion.", {"no_finding": N, "pleural_effusion": P}),
    ("Possible right lower lobe pneumonia.", {"no_finding": N, "pneumonia": U}),
    ("Endotracheal tube in good position. Lungs are clear.",
     {"no_finding": P, "support_devices": P, "lung_opacity": N, "consolidation": N}),
]


@pytest.fixture(scope="module")
def labeler() -> RuleLabeler:
    return RuleLabeler("chexpert14")


def test_there_are_enough_cases():
    assert len(CASES) >= 60


@pytest.mark.parametrize(("sentence", "expected"), CASES, ids=[c[0][:48] for c in CASES])
def test_sentence(labeler, sentence, expected):
    result = labeler.label(sentence)
    got = {k: v for k, v in result.codes.items() if not math.isnan(v)}
    for finding, code in expected.items():
        assert got.get(finding) == code, f"{finding}: expected {code}, got {got.get(finding)} ({result.evidence.get(finding)})"
    unexpected = {k: v for k, v in got.items() if k not in expected and k != "no_finding"}
    assert not unexpected, f"unexpected labels {unexpected}"
    for finding in got:
        assert result.evidence[finding].sentence, "every code comes with its evidence sentence"
