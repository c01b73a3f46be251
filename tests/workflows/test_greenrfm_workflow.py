"""greenrfm end to end on chest phantoms: the three stages into one folder (resumable), strict
stage-1 loading, unnormalised exports, zero-shot (prompt families and the classifier readout) and
retrieval, and the one-line errors of bad input (METHODS 3.3-3.5, 3.8)."""

from __future__ import annotations

import json
import logging
import shutil

import pandas as pd
import pytest
import torch

from greenfm.errors import BadInputError, ConfigError
from greenfm.models.export import load_exported_towers
from greenfm.models.image_text import ImageTextModel
from greenfm.models.text_tiny import tiny_text_tower
from greenfm.workflows.image_text_eval import RetrieveConfig, ZeroshotConfig, run_retrieve, run_zeroshot
from greenfm.workflows.pretrain import PretrainConfig, load_run_pretrain_config, run_pretrain

TRAIN = {"max_steps": 2, "batch_size": 8, "num_workers": 0, "track_energy": False, "progress_bar": False,
         "checkpoint_every_epochs": None, "accelerator": "cpu", "show_ledger": False}  # fmt: skip


@pytest.fixture(scope="module")
def text_folder(phantom_split, tmp_path_factory):
    reports = pd.read_csv(phantom_split)["report"].tolist()
    return str(tiny_text_tower(reports, max_length=48).save(tmp_path_factory.mktemp("grfm_text") / "tower"))


def _config(data, cache, **options):
    base = dict(recipe="greenrfm", data=str(data), backbone="vit_tiny_test", img_size=32, cache=str(cache), train=TRAIN)
    return PretrainConfig(**{**base, **options})


@pytest.fixture(scope="module")
def staged(phantom_split, cache_root, text_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("greenrfm") / "run"
    result = run_pretrain(_config(phantom_split, cache_root, text_tower=text_folder), out)
    return out, result


def test_stage_all_trains_three_runs_and_exports_unnormalised_latents(staged):
    out, result = staged
    assert set(result.stages) == {"image", "text", "align"} and result.steps == 6
    records = {s: json.loads((out / s / "exported" / "config.json").read_text()) for s in ("image", "text", "align")}
    assert {s: r["metadata"]["stage"] for s, r in records.items()} == {s: s for s in records}
    assert set(records["image"]["heads"]) == {"classifier_weight", "classifier_bias"}
    assert records["text"]["heads"]["classifier_weight"] == [5, 32]
    align = records["align"]
    assert align["heads"] == {"classifier_weight": [5, 768], "classifier_bias": [5], "image_projection": [768, 64],
                              "text_projection": [768, 32]}  # fmt: skip
    assert align["metadata"]["flags"]["normalize_latents"] is False
    assert align["metadata"]["flags"]["label_policy"] == {"uncertain": "mask", "missing": "mask"}
    assert align["metadata"]["stage1_runs"] == {"image": str(out / "image"), "text": str(out / "text")}
    saved = (out / "align" / "config.yaml").read_text()
    assert "grad_clip: 0.5" in saved and "schedule: constant" in saved  # the align defaults, max_steps from TRAIN
    model = ImageTextModel.from_export(out / "align")
    assert model.normalize is False and model.findings == align["metadata"]["findings"]
    latents = model.encode_texts(["There is cardiomegaly.", "There is no cardiomegaly."])
    assert not torch.allclose(latents.norm(dim=-1), torch.ones(2), atol=1e-3)  # raw latents, not unit vectors
    with pytest.raises(BadInputError, match="--stage text run, not an aligned"):
        ImageTextModel.from_export(out / "text")
    from greenfm.workflows.inputs import load_image_text

    assert load_image_text(out).findings == model.findings  # the --stage all folder stands for its align stage


def test_stage_all_resumes_and_skips_finished_stages(staged, phantom_split, cache_root, text_folder, tmp_path):
    out, _ = staged
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    shutil.rmtree(copy / "align")
    with pytest.raises(ConfigError, match="already holds a staged run"):
        run_pretrain(_config(phantom_split, cache_root, text_tower=text_folder), copy)
    saved = load_run_pretrain_config(copy)  # what `greenfm pretrain --out RUN --resume` reads
    assert saved.stage == "all" and saved.recipe == "greenrfm"
    again = run_pretrain(saved, copy, resume=True)
    assert set(again.stages) == {"align"} and (copy / "align" / "exported" / "config.json").is_file()


def test_align_loads_both_stage1_towers_strictly(staged, phantom_split, cache_root, tmp_path):
    out, _ = staged
    run_pretrain(_config(phantom_split, cache_root, stage="align", init_image=str(out / "image"), backbone=None,
                         img_size=None, init_text=str(out / "text"), train={**TRAIN, "max_steps": 1, "lr": 1e-12}),
                 tmp_path / "align")  # fmt: skip
    after = load_exported_towers(tmp_path / "align" / "exported")
    for name, source in (("image", out / "image"), ("text", out / "text")):
        before = load_exported_towers(source / "exported", [name])[name]
        for (key, a), (_, b) in zip(before.state_dict().items(), after[name].state_dict().items()):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=f"{name}.{key}")


def test_align_refuses_runs_of_another_stage_tower_or_vocabulary(staged, phantom_split, cache_root, text_folder,
                                                                  tmp_path):  # fmt: skip
    out, _ = staged
    image, text = str(out / "image"), str(out / "text")
    cases = [
        (dict(init_image=text, init_text=text), "is a greenrfm run of stage text, not a greenrfm --stage image run"),
        (dict(init_image=image), "pass --init-text"),
        (dict(init_image=image, init_text=text, backbone="resnet18", img_size=None), "not --backbone resnet18"),
        (dict(init_image=image, init_text=text, contract="imagenet"), "contract in"),
    ]
    other = tiny_text_tower(["entirely different words here"], max_length=48).save(tmp_path / "other_text")
    cases.append((dict(init_image=image, init_text=text, text_tower=str(other)), "another vocabulary than --init-text"))
    # a stage-1 image run trained on another label vocabulary (one finding column fewer)
    table = pd.read_csv(phantom_split)
    finding = [c for c in table.columns if c not in ("path", "patient_id", "id", "study_id", "split", "report")
               and not c.startswith("meta_")][0]  # fmt: skip
    fewer = phantom_split.parent / "fewer_findings.csv"
    table.drop(columns=[finding]).to_csv(fewer, index=False)
    run_pretrain(_config(fewer, cache_root, stage="image"), tmp_path / "image_fewer")
    cases.append((dict(init_image=str(tmp_path / "image_fewer"), init_text=text), "another label vocabulary"))
    for i, (options, message) in enumerate(cases):
        options = {"backbone": None, "img_size": None, **options}
        with pytest.raises(ConfigError, match=message):
            run_pretrain(_config(phantom_split, cache_root, stage="align", **options), tmp_path / f"bad{i}")
        assert not (tmp_path / f"bad{i}").exists()


def test_align_from_unsupervised_towers_warns_and_records_it(phantom_split, cache_root, text_folder, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        run_pretrain(_config(phantom_split, cache_root, stage="align", text_tower=text_folder,
                             method={"init_from_stage1": False, "label_policy": "official"}), tmp_path / "a")  # fmt: skip
    assert "reproduces the official release" in caplog.text
    flags = json.loads((tmp_path / "a" / "exported" / "config.json").read_text())["metadata"]["flags"]
    assert flags["init_from_stage1"] is False and flags["label_policy"] == {"uncertain": "zeros", "missing": "zeros"}
    with pytest.raises(ConfigError, match="contradict init_from_stage1=false"):
        run_pretrain(_config(phantom_split, cache_root, stage="align", init_image=str(tmp_path / "a"),
                             method={"init_from_stage1": False}), tmp_path / "b")  # fmt: skip


def test_bad_labels_missing_reports_and_stray_stage_options_are_one_line(phantom_split, cache_root, tmp_path):
    table = pd.read_csv(phantom_split)
    finding = [c for c in table.columns if c not in ("path", "patient_id", "id", "study_id", "split", "report")
               and not c.startswith("meta_")][0]  # fmt: skip
    bad = table.copy()
    bad[finding] = bad[finding].astype(object)
    bad.loc[3, finding] = "2"
    bad.to_csv(phantom_split.parent / "bad_label.csv", index=False)
    with pytest.raises(BadInputError, match=rf"row 5 .*{finding}='2(\.0)?' is not 1, 0, -1 or empty"):
        run_pretrain(_config(phantom_split.parent / "bad_label.csv", cache_root, stage="image"), tmp_path / "a")
    table.drop(columns=["report"]).to_csv(phantom_split.parent / "no_report.csv", index=False)
    with pytest.raises(BadInputError, match="recipe 'greenrfm' stage text needs a 'report' column"):
        run_pretrain(_config(phantom_split.parent / "no_report.csv", cache_root, stage="text"), tmp_path / "b")
    with pytest.raises(ConfigError, match="has stages image, text, align or all"):
        run_pretrain(_config(phantom_split, cache_root, stage="both"), tmp_path / "c")
    with pytest.raises(ConfigError, match="recipe 'supervised' has no stages"):
        run_pretrain(_config(phantom_split, cache_root, recipe="supervised", stage="image"), tmp_path / "d")


def test_zeroshot_prompt_families_classifier_readout_and_retrieval(staged, phantom_split, cache_root, tmp_path):
    out, _ = staged
    model = str(out / "align")
    results = {}
    for family in ("p1", "p2", "p3", "p4", "p5"):
        run_zeroshot(ZeroshotConfig(model=model, data=str(phantom_split), cache=str(cache_root), resamples=0,
                                    prompts=family), tmp_path / family)  # fmt: skip
        results[family] = json.loads((tmp_path / family / "zeroshot.json").read_text())
    assert results["p3"]["prompts"][0]["negative"].startswith("There is no ")
    assert results["p2"]["prompts"][0]["negative"] == ""
    assert {r["prompt_family"] for r in results.values()} == {"p1", "p2", "p3", "p4", "p5"}
    assert results["p3"]["extra"]["normalize"] is False and results["p3"]["readout"] == "prompts"
    scores = {f: pd.read_parquet(tmp_path / f / "predictions.parquet")["score"] for f in ("p1", "p3")}
    assert not scores["p1"].equals(scores["p3"])  # the family changes the scores
    # classifier readout on a split where one finding has a single class: skipped and counted
    table = pd.read_csv(phantom_split)
    finding = [c for c in table.columns if c not in ("path", "patient_id", "id", "study_id", "split", "report")
               and not c.startswith("meta_")][0]  # fmt: skip
    table.loc[table["split"] == "test", finding] = 0
    one_class = phantom_split.parent / "one_class.csv"
    table.to_csv(one_class, index=False)
    result = run_zeroshot(ZeroshotConfig(model=model, data=str(one_class), cache=str(cache_root), resamples=0,
                                         readout="classifier"), tmp_path / "clf")  # fmt: skip
    saved = json.loads((tmp_path / "clf" / "zeroshot.json").read_text())
    assert saved["readout"] == "classifier" and saved["prompt_family"] is None
    assert result["metrics"].n_classes == 5 and result["metrics"].n_evaluable <= 4
    predictions = pd.read_parquet(tmp_path / "clf" / "predictions.parquet")
    assert predictions["score"].between(0, 1).all()
    retrieval = run_retrieve(RetrieveConfig(model=model, data=str(phantom_split), cache=str(cache_root)), tmp_path / "r")
    recall = retrieval["result"]["text_to_image"]["recall"]
    assert [r["k"] for r in recall] == [1, 5, 10, 50, 100] and all(0 <= r["random"] <= 1 for r in recall)
    assert retrieval["result"]["similarity"].startswith("cosine")
