"""Template reports for label-only data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from greenfm.labeling import RuleLabeler, load_template_bank, synthesize_reports


def test_shipped_bank_has_the_chexficient_shape():
    bank = load_template_bank("chexficient-v1")
    assert (len(bank.positive), len(bank.negative), len(bank.uncertain)) == (8, 7, 3)
    assert bank.no_finding and bank.tag == "chexficient-v1@v1"


def labels(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ids = ["cardiomegaly", "pleural_effusion", "pneumothorax", "consolidation", "lung_nodule"]
    values = rng.choice([1.0, 0.0, -1.0, np.nan], size=(rows, len(ids)), p=[0.25, 0.45, 0.1, 0.2])
    return pd.DataFrame(values, columns=ids)


def test_rendering_is_seeded_per_row():
    table = labels(20)
    a = synthesize_reports(table, "phantom-cxr5", seed=3)
    assert a == synthesize_reports(table, "phantom-cxr5", seed=3)
    assert a != synthesize_reports(table, "phantom-cxr5", seed=4)
    assert synthesize_reports(table.iloc[:5], "phantom-cxr5", seed=3) == a[:5], "a row's text ignores later rows"


def test_all_positives_and_at_most_n_negatives_are_rendered():
    table = pd.DataFrame([{"cardiomegaly": 1, "pleural_effusion": 0, "pneumothorax": 0, "consolidation": 0,
                           "lung_nodule": 1}])
    for seed in range(10):
        text = synthesize_reports(table, "phantom-cxr5", seed=seed, max_negatives=1)[0].lower()
        assert "cardiomegaly" in text and "lung nodule" in text
        assert sum(name in text for name in ("pleural effusion", "pneumothorax", "consolidation")) == 1
    assert synthesize_reports(table.assign(cardiomegaly=0, lung_nodule=np.nan), "phantom-cxr5",
                              max_negatives=0)[0] == "No abnormal findings."


def test_rule_labeler_reads_back_what_was_rendered():
    table = labels(200, seed=1)
    reports = synthesize_reports(table, "phantom-cxr5", seed=0, max_negatives=5)
    got = RuleLabeler("phantom-cxr5").label_many(reports).frame()
    assert got.shape == table.shape
    truth = table.to_numpy()
    pred = got.to_numpy()
    rendered = ~np.isnan(truth)  # blanks are not mentioned, so they stay blank
    np.testing.assert_array_equal(pred[rendered], truth[rendered])
    assert np.isnan(pred[~rendered]).all()


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(Exception, match="no label column"):
        synthesize_reports(pd.DataFrame({"x": [1]}), "phantom-cxr5")
    bad = tmp_path / "bank.yaml"
    bad.write_text("positive: ['There is something.']\nnegative: ['No {c}.']\nuncertain: ['{c}?']\nno_finding: ['ok']\n")
    with pytest.raises(Exception, match=str(bad.name)):
        load_template_bank(bad)
