"""``label_manifest`` (``greenfm label``): reports in a manifest -> a new labeled manifest."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from fake_llm_server import FakeChatServer, chat

from greenfm.data.manifest import load_manifest
from greenfm.errors import ConfigError, GreenfmError
from greenfm.labeling import (
    compare_labels,
    evaluate_against_manifest,
    label_manifest,
    synthesize_reports,
)

REPORTS = [
    "Mild cardiomegaly. No pleural effusion or pneumothorax.",
    "Possible left lower lobe pneumonia.",
    "",
    "<p>Large right pneumothorax.</p>",
    "Derrame pleural derecho y consolidación del lóbulo inferior con broncograma aéreo.",
    "Lungs are clear. " * 3000,
]


@pytest.fixture()
def manifest(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    table = pd.DataFrame({
        "path": [f"img/{i}.png" for i in range(len(REPORTS))],
        "patient_id": [f"p{i // 2}" for i in range(len(REPORTS))],
        "report": REPORTS,
        "pneumothorax": [0, np.nan, np.nan, 1, np.nan, 0],
        "meta_site": "A",
    })
    path = folder / "manifest.csv"
    table.to_csv(path, index=False)
    return path


def test_writes_a_new_manifest_with_labels_evidence_and_record(manifest, tmp_path):
    out = tmp_path / "out" / "labeled.csv"
    summary = label_manifest(manifest, out, vocab="chexpert14")
    result = pd.read_csv(out)
    assert len(result) == len(REPORTS)
    assert list(result.columns[:5]) == ["path", "patient_id", "report", "meta_given_pneumothorax", "meta_site"]
    assert result.loc[0, "cardiomegaly"] == 1 and math.isnan(result.loc[1, "cardiomegaly"])
    assert result.loc[0, "pleural_effusion"] == 0 and result.loc[1, "pneumonia"] == -1
    assert result.loc[3, "pneumothorax"] == 1 and math.isnan(result.loc[2, "pneumothorax"])
    assert result["meta_labeler"].iloc[0].startswith("rules:chexpert14@v1")
    assert result["path"].iloc[0] == "../data/img/0.png", "relative paths follow the new location"

    loaded = load_manifest(out, check_files=False)  # the output is a valid greenfm manifest
    assert "cardiomegaly" in loaded.findings and "meta_given_pneumothorax" not in loaded.findings
    assert loaded.table["path"].iloc[0] == str((manifest.parent / "img/0.png").resolve())

    evidence = pd.read_csv(summary.evidence)
    row = evidence[(evidence["id"] == "../data/img/1.png") & (evidence["finding"] == "pneumonia")].iloc[0]
    assert row["code"] == -1 and row["cue"] == "possible" and "pneumonia" in row["sentence"].lower()

    record = json.loads(summary.record.read_text())
    assert record["n_reports"] == 6 and record["source"]["engine"] == "rules"
    assert summary.issues == {"empty": 1, "html": 1, "long": 1, "non_english": 1}
    rates = summary.per_finding.set_index("finding")
    assert rates.loc["cardiomegaly", "failure_rate"] == pytest.approx(2 / 6)
    assert rates.loc["cardiomegaly", "prevalence"] == pytest.approx(1 / 4)
    assert rates.loc["pneumonia", "uncertain_rate"] == pytest.approx(1 / 4)
    assert "labeled 4 of 6 reports" in summary.to_text()


def test_refuses_to_overwrite(manifest, tmp_path):
    with pytest.raises(ConfigError, match="never overwrites its input"):
        label_manifest(manifest, manifest)
    out = tmp_path / "labeled.parquet"
    label_manifest(manifest, out)
    with pytest.raises(ConfigError, match="already exists"):
        label_manifest(manifest, out)
    label_manifest(manifest, out, overwrite=True)
    assert pd.read_parquet(out)["pneumothorax"].dtype == "Int8"


def test_compare_against_given_labels(manifest, tmp_path):
    summary = label_manifest(manifest, tmp_path / "l.csv", compare=True)
    row = summary.comparison.set_index("finding").loc["pneumothorax"]
    # given: row0 0, row3 1, row5 0 (rows 1, 2, 4 unknown); predicted: 0, 1, blank -> tp 1, tn 2
    assert (row["n"], row["tp"], row["fp"], row["fn"], row["tn"]) == (3, 1, 0, 0, 2)
    assert row["f1"] == 1.0 and "agreement with the manifest" in summary.to_text()
    with pytest.raises(GreenfmError, match="no label column of vocabulary 'merlin-30'"):
        label_manifest(manifest, tmp_path / "m.csv", vocab="merlin-30", compare=True)


def test_bad_inputs_are_one_line_errors(tmp_path, manifest):
    no_report = tmp_path / "no_report.csv"
    pd.DataFrame({"path": ["a.png"], "patient_id": ["p"]}).to_csv(no_report, index=False)
    with pytest.raises(GreenfmError, match="no 'report' column"):
        label_manifest(no_report, tmp_path / "o.csv")
    with pytest.raises(GreenfmError, match="unknown labeling engine 'magic'"):
        label_manifest(manifest, tmp_path / "o.csv", engine="magic")
    with pytest.raises(GreenfmError, match="must end in .csv or .parquet"):
        label_manifest(manifest, tmp_path / "o.txt")


def test_latin1_manifest_is_read_and_counted(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("path,patient_id,report\na.png,p1,Pleural effusion \xe9tendue.\nb.png,p2,No pneumothorax.\n"
                     .encode("latin-1"))
    summary = label_manifest(path, tmp_path / "o.csv")
    assert summary.issues.get("decode") == 1
    out = pd.read_csv(tmp_path / "o.csv")
    assert out.loc[0, "pleural_effusion"] == 1 and out.loc[1, "pneumothorax"] == 0


def test_llm_engine_end_to_end_with_cache(manifest, tmp_path):
    def answer(report, n):
        return 200, chat(",".join(["1"] + ["0"] * 13)), 0.0

    cache = tmp_path / "cache.sqlite"
    with FakeChatServer(answer) as server:
        options = {"engine": "llm", "llm_base_url": server.base_url, "llm_model": "tiny", "cache": cache,
                   "concurrency": 4}
        first = label_manifest(manifest, tmp_path / "a.csv", **options)
        second = label_manifest(manifest, tmp_path / "b.csv", **options)
    assert first.ledger["calls"] == 5 and first.ledger["failures"] == {"too_short": 1}
    assert second.ledger["calls"] == 0 and second.ledger["cache_hits"] == 5
    out = pd.read_csv(tmp_path / "a.csv")
    assert out["meta_labeler"].iloc[0] == f"llm:chexpert14@v1:{first.source['vocabulary'].split(':')[-1]}:tiny:" \
        f"{first.source['prompt_hash']}"
    assert out["no_finding"].tolist()[:2] == [1, 1] and math.isnan(out.loc[2, "no_finding"])
    assert "LLM: 5 calls" in first.to_text()


def test_evaluate_against_manifest_is_one_line(tmp_path):
    rng = np.random.default_rng(0)
    ids = ["cardiomegaly", "pleural_effusion", "pneumothorax", "consolidation", "lung_nodule"]
    labels = pd.DataFrame(rng.choice([0.0, 1.0], size=(40, 5), p=[0.6, 0.4]), columns=ids)
    table = labels.assign(path=[f"{i}.png" for i in range(40)], patient_id="p",
                          report=synthesize_reports(labels, "phantom-cxr5", max_negatives=5))
    path = tmp_path / "phantoms.csv"
    table.to_csv(path, index=False)
    scores = evaluate_against_manifest(path, "phantom-cxr5")
    assert scores["finding"].tolist() == ids and (scores["f1"] == 1.0).all() and (scores["n"] == 40).all()


def test_compare_labels_counting_rules():
    predicted = pd.DataFrame({"x": [1, 1, 0, np.nan, -1, 1, 0]})
    reference = pd.DataFrame({"x": [1, 0, 1, 1, 1, np.nan, -1]})
    row = compare_labels(predicted, reference).iloc[0]
    # compared rows 0-4 (reference NaN and -1 left out); predicted NaN and -1 count as negative
    assert (row["n"], row["tp"], row["fp"], row["fn"], row["tn"]) == (5, 1, 1, 3, 0)
    assert row["precision"] == 0.5 and row["recall"] == 0.25 and row["exact"] == 0.2
    lenient = compare_labels(predicted, reference, predicted_uncertain="positive", reference_uncertain="negative")
    assert (lenient.iloc[0]["n"], lenient.iloc[0]["tp"], lenient.iloc[0]["tn"]) == (6, 2, 1)
