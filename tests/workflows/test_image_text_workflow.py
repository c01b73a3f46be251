"""Image-text pretraining end to end on phantoms: ``unicl`` / ``clip`` with a tiny text tower, stage
chaining with strict tower loading, template reports for label-only data, zero-shot and retrieval
results, and the one-line errors of bad input."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from greenfm.errors import BadInputError, ConfigError, GreenfmError
from greenfm.models.export import load_exported_heads, load_exported_towers
from greenfm.models.text_tiny import tiny_text_tower
from greenfm.workflows.image_text_eval import RetrieveConfig, ZeroshotConfig, run_retrieve, run_zeroshot
from greenfm.workflows.pretrain import PretrainConfig, run_pretrain

TRAIN = {"max_steps": 3, "batch_size": 8, "num_workers": 0, "lr": 1e-3, "track_energy": False,
         "progress_bar": False, "checkpoint_every_epochs": None, "accelerator": "cpu", "warmup": 0}  # fmt: skip


@pytest.fixture(scope="module")
def text_folder(phantom_split, tmp_path_factory):
    reports = pd.read_csv(phantom_split)["report"].tolist()
    return str(tiny_text_tower(reports, max_length=48).save(tmp_path_factory.mktemp("tiny_text") / "tower"))


def _config(data, cache, recipe="unicl", **options):
    base = dict(recipe=recipe, data=str(data), backbone="vit_tiny_test", img_size=32, cache=str(cache), train=TRAIN,
                method={"embed_dim": 16})  # fmt: skip
    return PretrainConfig(**{**base, **options})


@pytest.fixture(scope="module")
def unicl_run(phantom_split, cache_root, text_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("unicl") / "run"
    run_pretrain(_config(phantom_split, cache_root, text_tower=text_folder), out)
    return out


def test_unicl_run_exports_both_towers_and_records_the_text_side(unicl_run):
    config = json.loads((unicl_run / "exported" / "config.json").read_text())
    assert set(config["towers"]) == {"image", "text"} and config["heads"]["logit_scale"] == [1]
    assert config["metadata"]["reports"]["rows"] > 0 and config["metadata"]["reports"]["truncated"] >= 0
    ledger = json.loads((unicl_run / "compute.json").read_text())
    assert ledger["samples_trained"] == ledger["samples_seen"] == 24


def test_next_stage_loads_the_towers_strictly(unicl_run, phantom_split, cache_root, tmp_path):
    out = tmp_path / "stage2"
    run_pretrain(_config(phantom_split, cache_root, recipe="clip", init=str(unicl_run), backbone=None, img_size=None,
                         train={**TRAIN, "max_steps": 1, "lr": 1e-12}), out)  # fmt: skip
    before = load_exported_towers(unicl_run / "exported")
    after = load_exported_towers(out / "exported")
    # the weights arrived: after one step at lr 1e-12 every tensor is still the first stage's
    for name in ("image", "text"):
        for (key, a), (_, b) in zip(before[name].state_dict().items(), after[name].state_dict().items()):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=f"{name}.{key}")
    first, second = load_exported_heads(unicl_run / "exported"), load_exported_heads(out / "exported")
    torch.testing.assert_close(first["image_projection"], second["image_projection"], rtol=0, atol=1e-6)


def test_stage_with_another_architecture_or_vocabulary_is_refused(unicl_run, phantom_split, cache_root, tmp_path):
    with pytest.raises(ConfigError, match="not --backbone resnet18"):
        run_pretrain(_config(phantom_split, cache_root, init=str(unicl_run), backbone="resnet18", img_size=None),
                     tmp_path / "a")  # fmt: skip
    other = tiny_text_tower(["entirely different words here", "and more of them"], max_length=48).save(tmp_path / "t")
    with pytest.raises(ConfigError, match="another vocabulary"):
        run_pretrain(_config(phantom_split, cache_root, init=str(unicl_run), backbone=None, img_size=None,
                             text_tower=str(other)), tmp_path / "b")  # fmt: skip
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_zeroshot_and_retrieval_write_their_results(unicl_run, phantom_split, cache_root, tmp_path):
    result = run_zeroshot(ZeroshotConfig(model=str(unicl_run), data=str(phantom_split), cache=str(cache_root),
                                         resamples=50), tmp_path / "zs")  # fmt: skip
    saved = json.loads((tmp_path / "zs" / "zeroshot.json").read_text())
    assert saved["prompt_family"] == "p3" and saved["prompts"][0]["positive"].startswith("There is ")
    assert saved["test"]["n_classes"] == 5 and result["metrics"].n_evaluable >= 1
    retrieval = run_retrieve(RetrieveConfig(model=str(unicl_run), data=str(phantom_split), cache=str(cache_root)),
                             tmp_path / "rt")["result"]  # fmt: skip
    first = retrieval["image_to_text"]["recall"][0]
    assert first["k"] == 1 and 0 <= first["recall"] <= 1 and first["random"] == pytest.approx(1 / retrieval["n_unique_texts"])


def test_unknown_prompt_family_and_image_only_model_are_one_line_errors(unicl_run, phantom_split, tmp_path):
    with pytest.raises(GreenfmError, match="p3"):
        run_zeroshot(ZeroshotConfig(model=str(unicl_run), data=str(phantom_split), prompts="p9"), tmp_path / "x")
    from greenfm.models import create_encoder, export_encoder

    image_only = export_encoder(create_encoder("vit_tiny_test", img_size=32), tmp_path / "image_only")
    with pytest.raises(BadInputError, match="not an image-text model"):
        run_zeroshot(ZeroshotConfig(model=str(image_only), data=str(phantom_split)), tmp_path / "y")


def test_reports_missing_or_empty_are_refused_and_labels_can_stand_in(phantom_split, cache_root, text_folder, tmp_path):
    table = pd.read_csv(phantom_split)
    table["path"] = [str((phantom_split.parent / p).resolve()) for p in table["path"]]
    no_reports = tmp_path / "labels_only.csv"
    table.drop(columns=["report"]).to_csv(no_reports, index=False)
    with pytest.raises(BadInputError, match="needs a 'report' column.*--text-from-labels"):
        run_pretrain(_config(no_reports, cache_root, text_tower=text_folder), tmp_path / "a")
    empty = tmp_path / "empty.csv"
    table.assign(report=[""] + table["report"].tolist()[1:]).to_csv(empty, index=False)
    with pytest.raises(BadInputError, match="empty report"):
        run_pretrain(_config(empty, cache_root, text_tower=text_folder, splits=["train", "val", "test"]), tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()

    run_pretrain(_config(no_reports, cache_root, text_tower=text_folder, text_from_labels=True), tmp_path / "c")
    record = json.loads((tmp_path / "c" / "exported" / "config.json").read_text())["metadata"]
    assert record["template_reports"]["vocabulary"] == "phantom-cxr5"
    assert record["template_reports"]["rows"] == record["reports"]["rows"] > 0


def test_a_text_folder_without_tokenizer_is_one_line_error(phantom_split, cache_root, text_folder, tmp_path):
    import shutil

    broken = tmp_path / "no_tokenizer"
    shutil.copytree(text_folder, broken)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (broken / name).unlink(missing_ok=True)
    with pytest.raises(ConfigError, match="tokenizer"):
        run_pretrain(_config(phantom_split, cache_root, text_tower=str(broken)), tmp_path / "run")
