"""``run_finetune``: each mode trains, selects on validation AUROC, writes its run folder; bad inputs fail clearly."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from greenfm.errors import BadInputError, ConfigError, GreenfmError
from greenfm.workflows.finetune import run_finetune

TINY = {"model": "random", "backbone": "vit_tiny_test", "epochs": 2, "bootstrap": 50}


def _finetune(phantom_split, cache_root, out, **options):
    lines: list[str] = []
    result = run_finetune(data=phantom_split, out=out, cache=cache_root, echo=lines.append, **{**TINY, **options})
    return result, lines


@pytest.mark.parametrize("mode", ["linear", "lora", "full"])
def test_each_mode_selects_on_validation_auroc_and_writes_its_run(phantom_split, cache_root, tmp_path, mode):
    result, lines = _finetune(phantom_split, cache_root, tmp_path / mode, mode=mode, label_fraction=0.5)

    aurocs = [row["val_macro_auroc"] for row in result.history]
    assert len(aurocs) == 2 and result.best_epoch == int(np.nanargmax(aurocs))
    assert result.best_val_macro_auroc == pytest.approx(max(aurocs))
    low, high = result.test["macro_auroc_ci"]
    assert low <= result.test["macro_auroc"] <= high and result.test["bootstrap"]["cluster"] == "patient"

    run = tmp_path / mode
    for name in ("config.yaml", "finetune.json", "metrics.jsonl", "compute.json", "predictions.parquet",
                 "label_fraction.json", "exported/best.safetensors"):  # fmt: skip
        assert (run / name).is_file(), name
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["finetune"]["mode"] == mode and saved["train"]["epochs"] == 2
    assert saved["provenance"]["manifest_hash"] == saved["record"]["manifest_hash"]
    assert json.loads((run / "finetune.json").read_text())["test"]["macro_auroc_ci"] == pytest.approx([low, high])
    predictions = pd.read_parquet(run / "predictions.parquet")
    assert set(predictions["split"]) == {"val", "test"}

    share = next(line for line in lines if line.startswith("trainable parameters"))
    assert f"mode {mode}" in share and "%" in share
    expected_share = {"linear": (0, 1), "lora": (1, 10), "full": (99.99, 100)}[mode]
    assert expected_share[0] <= result.parameters["trainable_percent"] <= expected_share[1]


def test_label_fraction_keeps_whole_patients_of_train_only(phantom_split, cache_root, tmp_path):
    from greenfm.data.manifest import load_manifest

    result, lines = _finetune(phantom_split, cache_root, tmp_path / "half", mode="linear", label_fraction=0.3,
                              fraction_seed=4, epochs=1)  # fmt: skip
    record = yaml.safe_load((tmp_path / "half" / "config.yaml").read_text())["record"]
    table = load_manifest(phantom_split).table
    train = table[table["split"] == "train"]
    plan = json.loads((tmp_path / "half" / "label_fraction.json").read_text())
    used = train[train["id"].isin(plan["ids"]["0.3"])]
    assert record["n_train_images"] == len(used) < len(train)
    assert record["n_train_patients"] == used["patient_id"].nunique()
    assert record["label_policy"] == "default"  # uncertain and unknown labels masked in the loss
    assert len(train[train["patient_id"].isin(used["patient_id"])]) == len(used)  # whole patients
    assert any(f"training on {len(used)} images" in line for line in lines)
    test_rows = pd.read_parquet(tmp_path / "half" / "predictions.parquet").query("split == 'test'")
    assert test_rows["id"].nunique() == int((table["split"] == "test").sum())  # test never reduced


def _with_columns(phantom_split, tmp_path, **columns):
    table = pd.read_csv(phantom_split)
    table["path"] = [str((phantom_split.parent / p).resolve()) for p in table["path"]]
    for name, value in columns.items():
        table[name] = value
    path = tmp_path / "edited.csv"
    table.to_csv(path, index=False)
    return path


def test_bad_inputs_fail_before_training_with_one_clear_line(phantom_split, cache_root, tmp_path):
    unsplit = _with_columns(phantom_split, tmp_path)
    pd.read_csv(unsplit).drop(columns="split").to_csv(unsplit, index=False)
    with pytest.raises(BadInputError, match="greenfm data split"):
        _finetune(unsplit, cache_root, tmp_path / "a")

    edited = _with_columns(phantom_split, tmp_path, never=0, unknown=np.nan)
    with pytest.raises(BadInputError, match="no finding can be trained: never: no positive"):
        _finetune(edited, cache_root, tmp_path / "b", findings=["never"])
    with pytest.raises(BadInputError, match="unlabelled"):
        _finetune(edited, cache_root, tmp_path / "c", findings=["unknown"])
    with pytest.raises(BadInputError, match="holds no patient"):
        _finetune(phantom_split, cache_root, tmp_path / "d", label_fraction=0.001)
    with pytest.raises(ConfigError, match="unknown LoRA preset 'wide'; choose one of: med-peft, broad"):
        _finetune(phantom_split, cache_root, tmp_path / "e", preset="wide")
    with pytest.raises(GreenfmError, match="attn.qkv"):
        _finetune(phantom_split, cache_root, tmp_path / "f", backbone="resnet10t", img_size=None)
    assert not (tmp_path / "f" / "config.yaml").exists()


def test_one_hot_findings_train_as_multiclass_and_a_finished_run_resumes_to_the_same_result(
    phantom_split, cache_root, tmp_path
):
    effusion = pd.read_csv(phantom_split)["pleural_effusion"].eq(1).astype(int)
    classes = _with_columns(phantom_split, tmp_path, effusion=effusion, no_effusion=1 - effusion)
    table = pd.read_csv(classes).drop(columns=["cardiomegaly", "pleural_effusion", "pneumothorax",
                                               "consolidation", "lung_nodule"])  # fmt: skip
    table.to_csv(classes, index=False)
    result, _ = _finetune(classes, cache_root, tmp_path / "mc", mode="linear", epochs=1)
    assert result.test["task"] == "multiclass"
    assert [f["name"] for f in result.test["findings"]] == ["effusion", "no_effusion"]
    assert yaml.safe_load((tmp_path / "mc" / "config.yaml").read_text())["record"]["task"] == "multiclass"

    with pytest.raises(ConfigError, match="already holds a fine-tuning run"):
        _finetune(classes, cache_root, tmp_path / "mc", mode="full")
    resumed = run_finetune(out=tmp_path / "mc", resume=True, echo=lambda _: None)  # saved options, nothing to train
    assert resumed.test["macro_auroc"] == pytest.approx(result.test["macro_auroc"])
    assert resumed.best_epoch == result.best_epoch
