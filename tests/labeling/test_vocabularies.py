"""Finding vocabularies: built-in lists, user files and their errors."""

from __future__ import annotations

import os

import pytest

from greenfm.errors import GreenfmError
from greenfm.labeling import RuleLabeler, builtin_vocabularies, load_vocabulary

CT_RATE_18 = (
    "medical material, arterial wall calcification, cardiomegaly, pericardial effusion, coronary artery wall "
    "calcification, hiatal hernia, lymphadenopathy, emphysema, atelectasis, lung nodule, lung opacity, pulmonary "
    "fibrotic sequela, pleural effusion, mosaic attenuation pattern, peribronchial thickening, consolidation, "
    "bronchiectasis, interlobular septal thickening"
)
CHEXPERT_14 = (
    "No Finding, Enlarged Cardiomediastinum, Cardiomegaly, Lung Opacity, Lung Lesion, Edema, Consolidation, "
    "Pneumonia, Atelectasis, Pneumothorax, Pleural Effusion, Pleural Other, Fracture, Support Devices"
)
NIH_14 = (
    "Atelectasis, Cardiomegaly, Effusion, Infiltration, Mass, Nodule, Pneumonia, Pneumothorax, Consolidation, "
    "Edema, Emphysema, Fibrosis, Pleural Thickening, Hernia, No Finding"
)


def test_builtin_vocabularies_in_their_official_order():
    assert set(builtin_vocabularies()) == {"chexpert14", "nih14", "ct-rate-18", "merlin-30", "phantom-cxr5", "mri-knee-14", "mri-spine-9"}
    assert [n.lower() for n in load_vocabulary("ct-rate-18").names] == CT_RATE_18.split(", ")
    assert load_vocabulary("chexpert14").names == CHEXPERT_14.split(", ")
    assert load_vocabulary("nih14").names == NIH_14.split(", ")
    merlin = load_vocabulary("merlin-30")
    assert len(merlin) == 30 and merlin.ids[0] == "submucosal_edema" and merlin.ids[-2:] == ["free_air", "fracture"]
    assert "not checked" in merlin.provenance
    assert load_vocabulary("phantom-cxr5").ids == [
        "cardiomegaly", "pleural_effusion", "pneumothorax", "consolidation", "lung_nodule"]


def test_names_ignore_case_and_hyphens():
    assert load_vocabulary("CheXpert-14").name == "chexpert14"
    assert load_vocabulary("ct_rate_18").name == "ct-rate-18"
    with pytest.raises(GreenfmError, match="unknown vocabulary 'radlex'.*chexpert14"):
        load_vocabulary("radlex")


@pytest.mark.parametrize("name", ["chexpert14", "nih14", "ct-rate-18", "merlin-30", "phantom-cxr5"])
def test_every_plain_synonym_is_found_as_a_positive_mention(name):
    vocab = load_vocabulary(name)
    labeler = RuleLabeler(vocab)
    for f in vocab.findings:
        if f.kind != "finding":
            continue
        assert f.synonyms, f"{f.id} has no synonyms"
        for phrase in f.synonyms:
            if phrase.startswith("re:"):
                continue
            codes = labeler.label(f"Findings: {phrase} in the image.").codes
            assert codes[f.id] == 1.0, f"{name}: '{phrase}' does not mark {f.id} positive"


def write(tmp_path, text: str):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    return path


def test_user_vocabulary_from_any_path(tmp_path):
    path = write(tmp_path, """
name: knee-mini
findings:
  - id: meniscal_tear
    name: Meniscal tear
    synonyms: [meniscal tear, torn meniscus]
  - id: joint_effusion
    name: Joint effusion
    synonyms: [joint effusion, effusion]
    normal: ["re:no (?:joint )?effusion is present"]
""")
    vocab = load_vocabulary(path)
    assert vocab.ids == ["meniscal_tear", "joint_effusion"] and vocab.source == str(path.resolve())
    codes = RuleLabeler(vocab).label("Torn meniscus. No joint effusion.").codes
    assert codes == {"meniscal_tear": 1.0, "joint_effusion": 0.0}


@pytest.mark.parametrize(
    ("findings", "message"),
    [
        ("[{id: a, name: A}, {id: a, name: B}]", "duplicate finding id 'a'"),
        ("[{id: a, name: Tear}, {id: b, name: tear}]", "duplicate finding name 'tear'"),
        ("[{id: Bad-Id, name: A}]", "snake_case"),
        ("[{id: report, name: Report}]", "reserved"),
        ("[{id: a}]", "has no name"),
        ("[{id: a, name: A, synonyms: ['re:(unclosed']}]", "bad regular expression"),
        ("[{id: a, name: A, colour: red}]", "unknown key"),
        ("[]", "non-empty 'findings'"),
    ],
)
def test_bad_user_vocabulary_gives_one_line_naming_the_file(tmp_path, findings, message):
    path = write(tmp_path, f"name: x\nfindings: {findings}\n")
    with pytest.raises(GreenfmError, match=message) as err:
        load_vocabulary(path)
    assert str(path.resolve()) in str(err.value) and "\n" not in str(err.value)


def test_missing_or_broken_file(tmp_path):
    with pytest.raises(GreenfmError, match="not found"):
        load_vocabulary(tmp_path / "nope.yaml")
    with pytest.raises(GreenfmError, match="not valid YAML"):
        load_vocabulary(write(tmp_path, "findings: [a, : b"))


def test_hash_changes_with_content(tmp_path):
    a = load_vocabulary(write(tmp_path, "findings: [{id: a, name: A, synonyms: [x]}]\n"))
    path = tmp_path / "mine.yaml"
    path.write_text("findings: [{id: a, name: A, synonyms: [y]}]\n")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    b = load_vocabulary(path)
    assert a.hash != b.hash and b.findings[0].synonyms == ("y",)
