"""Patient-level splits and nested label fractions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from greenfm.data.manifest import load_manifest
from greenfm.data.splits import (
    assert_no_patient_leakage,
    nested_label_fractions,
    patient_grouped_split,
    split_manifest,
)
from greenfm.errors import BadInputError, ConfigError


def cohort(n_images=3000, n_patients=900, seed=0) -> pd.DataFrame:
    """Several images per patient; findings with prevalences 30%, 5% and ~0.5% (per patient)."""
    rng = np.random.default_rng(seed)
    patient = rng.integers(0, n_patients, n_images)
    risk = rng.random(n_patients)
    labels = {
        "common": (risk[patient] < 0.3).astype(float),
        "rare": (risk[patient] > 0.95).astype(float),
        "very_rare": ((risk[patient] > 0.6) & (risk[patient] < 0.605)).astype(float),
    }
    table = pd.DataFrame({"path": [f"{i}.png" for i in range(n_images)], "patient_id": patient.astype(str),
                          "id": [f"i{i}" for i in range(n_images)], **labels})
    table.loc[rng.random(n_images) < 0.1, "common"] = np.nan  # unknown
    table.loc[rng.random(n_images) < 0.05, "rare"] = -1.0  # uncertain
    return table


def test_split_is_patient_disjoint_sized_and_stratified():
    table = cohort()
    out = patient_grouped_split(table, val=0.1, test=0.2, seed=0)
    assert "split" not in table.columns and len(out) == len(table)
    assert out.groupby("patient_id")["split"].nunique().max() == 1
    assert_no_patient_leakage(out)
    share = out["split"].value_counts(normalize=True)
    assert share["train"] == pytest.approx(0.7, abs=0.03) and share["test"] == pytest.approx(0.2, abs=0.03)
    assert share["val"] == pytest.approx(0.1, abs=0.03)
    prevalence = out.groupby("split")[["common", "rare"]].apply(lambda t: (t == 1).mean())
    overall = (table[["common", "rare"]] == 1).mean()
    assert (prevalence - overall).abs().max().max() < 0.3 * overall.max()
    very_rare = out[out["very_rare"] == 1]
    assert {"train", "test"} <= set(very_rare["split"])  # rare findings reach train and test


def test_split_is_seeded():
    table = cohort(n_images=600, n_patients=200)
    a, b = (patient_grouped_split(table, seed=1)["split"] for _ in range(2))
    assert a.equals(b) and not a.equals(patient_grouped_split(table, seed=2)["split"])
    unstratified = patient_grouped_split(table, seed=1, stratify=False)
    assert unstratified.groupby("patient_id")["split"].nunique().max() == 1


def test_split_refuses_impossible_requests():
    table = cohort(n_images=4, n_patients=2)
    with pytest.raises(BadInputError, match="patient"):
        patient_grouped_split(table.assign(patient_id="same"))
    with pytest.raises(ConfigError, match="fractions"):
        patient_grouped_split(table, val=0.5, test=0.6)
    no_val = patient_grouped_split(cohort(n_images=50, n_patients=20), val=0, test=0.25)
    assert set(no_val["split"]) == {"train", "test"}


def test_nested_fractions_are_nested_group_aware_and_counted():
    train = cohort()
    plan = nested_label_fractions(train, (0.01, 0.1, 1.0), seed=0)
    small, mid, full = (set(plan.rows[f]) for f in (0.01, 0.1, 1.0))
    assert small < mid < full and full == set(range(len(train)))
    for f in (0.01, 0.1):
        chosen = train.iloc[plan.rows[f]]
        outside = train.drop(index=chosen.index)
        assert not set(chosen["patient_id"]) & set(outside["patient_id"])  # whole patients only
        counts = next(c for c in plan.counts if c["fraction"] == f)
        assert counts["n_images"] == len(chosen) and counts["n_patients"] == chosen["patient_id"].nunique()
        assert counts["n_patients"] == max(1, int(f * train["patient_id"].nunique() + 0.5))  # a share of patients
        for finding in ("common", "rare", "very_rare"):
            assert counts[f"positives_{finding}"] == int((chosen[finding] == 1).sum())
            assert f < 0.1 or counts[f"positives_{finding}"] >= 1
    assert plan.ids[0.01] == train["id"].iloc[plan.rows[0.01]].tolist()
    assert "0.01:" in plan.summary() and plan.to_dict()["rows"]["0.01"] == plan.rows[0.01].tolist()


def test_nested_fractions_are_seeded_and_differ_across_seeds():
    train = cohort(n_images=800, n_patients=300)
    a, b, c = (nested_label_fractions(train, (0.1,), seed=s) for s in (3, 3, 4))
    assert np.array_equal(a.rows[0.1], b.rows[0.1]) and not np.array_equal(a.rows[0.1], c.rows[0.1])


def test_fraction_without_positives_is_reported():
    train = cohort(n_images=500, n_patients=200).drop(columns=["very_rare"]).assign(absent=0.0)
    with pytest.warns(UserWarning, match="no positive images for: absent"):
        plan = nested_label_fractions(train, (0.05, 1.0), seed=0)
    assert plan.missing_positives[0.05] == ["absent"] and plan.missing_positives[1.0] == ["absent"]
    assert "no positives for: absent" in plan.summary()


def test_split_manifest_writes_a_new_file_and_never_the_input(tmp_path):
    table = cohort(n_images=60, n_patients=25).drop(columns=["id"])
    for p in table["path"]:
        (tmp_path / p).write_bytes(b"")
    table.to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        split_manifest(tmp_path / "m.csv", tmp_path / "m.csv")
    split_manifest(tmp_path / "m.csv", tmp_path / "out" / "split.csv", seed=0)
    reloaded = load_manifest(tmp_path / "out" / "split.csv", check_files=False)
    assert reloaded.has_splits and len(reloaded) == 60
    original = load_manifest(tmp_path / "m.csv", check_files=False)
    assert reloaded.table["path"].tolist() == original.table["path"].tolist()
    assert "split" not in pd.read_csv(tmp_path / "m.csv").columns


def test_real_cohort_split_is_patient_level(shared_data):
    meta = pd.read_csv(shared_data / "covid_cxr_notes" / "metadata.csv")
    table = pd.DataFrame({"path": meta["filename"], "patient_id": meta["patient_id"].astype(str),
                          "covid": (meta["finding"] == "COVID-19").astype(float).where(meta["finding"] != "todo")})
    out = patient_grouped_split(table, val=0.1, test=0.2, seed=0)
    assert_no_patient_leakage(out)
    assert out.groupby("patient_id")["split"].nunique().max() == 1
    assert set(out["split"]) == {"train", "val", "test"}
    plan = nested_label_fractions(out[out.split == "train"], (0.1, 1.0), seed=0)
    assert plan.counts[0]["positives_covid"] >= 1


def test_a_fraction_is_a_share_of_patients_whatever_else_is_asked_and_repeats_are_flagged():
    train = cohort(n_images=800, n_patients=300)
    for finding in ("a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n"):  # 14 findings
        train[finding] = (np.random.default_rng(len(finding) + ord(finding)).random(len(train)) < 0.05).astype(float)
    with pytest.warns(UserWarning):
        study = nested_label_fractions(train, (0.01, 0.02, 0.1, 1.0), seed=0)
    alone = nested_label_fractions(train, (0.1,), seed=0)
    assert np.array_equal(study.rows[0.1], alone.rows[0.1])  # finetune --label-fraction 0.1 == the study's 10%
    counts = {c["fraction"]: c for c in study.counts}
    n = train["patient_id"].nunique()
    assert counts[0.01]["n_patients"] == int(0.01 * n + 0.5) and counts[0.1]["n_patients"] == int(0.1 * n + 0.5)
    assert counts[0.01]["n_images"] < counts[0.1]["n_images"] < counts[1.0]["n_images"]
    assert "same_subset_as" not in counts[0.1]
    with pytest.warns(UserWarning, match="are the same"):
        tiny = nested_label_fractions(train, (0.01, 0.012), seed=0)
    assert tiny.counts[1]["same_subset_as"] == 0.01 and "the same subset as 0.01" in tiny.summary()


def test_keep_test_carves_val_out_of_train_only(tmp_path):
    table = cohort(n_images=300, n_patients=120).drop(columns=["id"])
    table = patient_grouped_split(table, val=0.0, test=0.25, seed=1)
    table["split"] = table["split"].replace({"val": "train"})
    for p in table["path"]:
        (tmp_path / p).write_bytes(b"")
    table.to_csv(tmp_path / "given.csv", index=False)
    kept = split_manifest(load_manifest(tmp_path / "given.csv", check_files=False), tmp_path / "kept.csv",
                          val=0.1, seed=0, keep_test=True)
    given_test = table["split"].to_numpy() == "test"
    assert (kept.table["split"].to_numpy()[given_test] == "test").all()
    assert set(kept.table["split"][~given_test]) == {"train", "val"}
    assert_no_patient_leakage(kept.table)
    with pytest.raises(ConfigError, match="keep-test"):
        split_manifest(load_manifest(tmp_path / "kept.csv", check_files=False).subset(~given_test),
                       tmp_path / "x.csv", keep_test=True)
