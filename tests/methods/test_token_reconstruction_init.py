"""The recommended start: without --init, token reconstruction starts from the paper's DINOv2 ViT-S/14
reg4 when the hub is reachable, else stops in one line saying how to pass a local file; random needs
an explicit --init random; other recipes keep random. The run records the start it used."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from greenfm.cli import main
from greenfm.errors import ConfigError
from greenfm.methods import get_method
from greenfm.methods.token_reconstruction import RECOMMENDED_ENCODER, TokenReconstruction
from greenfm.models import create_encoder
from greenfm.workflows.pretrain import PretrainConfig, load_run_pretrain_config, run_pretrain


@pytest.fixture
def manifest(tmp_path):
    for k in range(4):
        Image.fromarray(np.full((40, 40, 3), 60 * k, dtype=np.uint8)).save(tmp_path / f"{k}.png")
    path = tmp_path / "manifest.csv"
    path.write_text("path,patient_id\n" + "".join(f"{k}.png,p{k}\n" for k in range(4)))
    return path


def test_offline_stops_in_one_line_saying_how_to_pass_a_local_file(manifest, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="--init /path/to/model.safetensors"):
        TokenReconstruction.recommended_init()
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain", "--data", str(manifest), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert exit_info.value.code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "vit_small_patch14_reg4_dinov2" in lines[0] and "--init random" in lines[0]
    assert not (tmp_path / "run").exists()  # nothing started


def test_recommended_start_is_the_papers_encoder_and_other_recipes_keep_random(monkeypatch, tmp_path):
    fetched = []
    monkeypatch.setattr("greenfm.models.weights.download_hub_weights", lambda hub_id: fetched.append(hub_id) or tmp_path)
    assert TokenReconstruction.recommended_init() == RECOMMENDED_ENCODER["weights"]
    assert TokenReconstruction.recommended_init("vit_small_patch14_reg4_dinov2") == RECOMMENDED_ENCODER["weights"]
    assert fetched == ["timm/vit_small_patch14_reg4_dinov2.lvd142m"] * 2
    with pytest.raises(ConfigError, match="pass --init for --backbone vit_tiny_test"):
        TokenReconstruction.recommended_init("vit_tiny_test")
    for recipe in ("supervised", "unicl"):
        assert get_method(recipe).recommended_init("vit_tiny_test") == "random"
    assert PretrainConfig(data="m.csv").init is None


def test_the_run_records_the_start_it_used_and_its_source_size(manifest, tmp_path, monkeypatch):
    torch.manual_seed(0)
    weights = tmp_path / "start.safetensors"
    save_file({k: v.contiguous() for k, v in create_encoder("vit_tiny_test", img_size=32).model.state_dict().items()},
              str(weights))  # fmt: skip
    monkeypatch.setattr(TokenReconstruction, "recommended_init", classmethod(lambda cls, backbone=None: str(weights)))
    config = PretrainConfig(data=str(manifest), backbone="vit_tiny_test", img_size=32, contract="rfg",
                            cache=str(tmp_path / "cache"),
                            train={"max_steps": 1, "batch_size": 4, "num_workers": 0, "accelerator": "cpu",
                                   "track_energy": False, "progress_bar": False})  # fmt: skip
    run_pretrain(config, tmp_path / "run")
    assert load_run_pretrain_config(tmp_path / "run").init == str(weights)  # resume needs no hub
    exported = json.loads((tmp_path / "run" / "exported" / "config.json").read_text())
    record = exported["metadata"]
    assert record["init_weights"]["kind"] == "file" and record["augment"] == "rfg"
    assert record["source_size"] == [64, 64]  # augmented at 64 px, resized to 32 last
    assert "source_size" not in exported["preprocessing"]  # the model's input contract: a plain resize
    assert "source_size" not in record["contract"]
