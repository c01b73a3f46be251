"""``greenfm pretrain`` from an exported starting model: its size and contract carry over unless overridden."""

from __future__ import annotations

import json

import pytest
import torch

from greenfm import api
from greenfm.data.contract import Contract
from greenfm.errors import ConfigError
from greenfm.models import create_encoder, export_encoder


@pytest.fixture
def start_export(tmp_path):
    """A 32 px tiny ViT exported with an x-ray contract that is not the RETFound-Green preset."""
    torch.manual_seed(0)
    encoder = create_encoder("vit_tiny_test", img_size=32)
    contract = Contract(modality="xray", size=(32, 32), channels=3, mean=0.4, std=0.3)
    return export_encoder(encoder, tmp_path / "start", preprocessing=contract), contract


def _pretrain(phantom_split, cache_root, out, init, **kwargs):
    return api.pretrain(data=phantom_split, out=out, init=str(init), backbone="vit_tiny_test", max_steps=2,
                        batch_size=8, num_workers=0, cache=cache_root, **kwargs)  # fmt: skip


def test_an_exported_start_keeps_its_size_and_contract(phantom_split, cache_root, tmp_path, start_export):
    init, contract = start_export
    _pretrain(phantom_split, cache_root, tmp_path / "run", init)
    exported = json.loads((tmp_path / "run" / "exported" / "config.json").read_text())
    assert Contract.from_dict(exported["preprocessing"]) == contract
    assert exported["model"]["kwargs"]["img_size"] == 32


def test_an_explicit_contract_still_wins(phantom_split, cache_root, tmp_path, start_export):
    init, _ = start_export
    _pretrain(phantom_split, cache_root, tmp_path / "run", init, config=_yaml(tmp_path, "contract: rfg\n"))
    exported = json.loads((tmp_path / "run" / "exported" / "config.json").read_text())
    got = Contract.from_dict(exported["preprocessing"])
    assert (got.mean, got.std, got.size) == ((0.5,) * 3, (0.5,) * 3, (32, 32))


def test_a_size_other_than_the_starting_models_is_refused(phantom_split, cache_root, tmp_path, start_export):
    init, _ = start_export
    with pytest.raises(ConfigError, match="trained at 32 px but img_size is 64"):
        _pretrain(phantom_split, cache_root, tmp_path / "run", init, img_size=64)


def _yaml(folder, text):
    path = folder / "pretrain.yaml"
    path.write_text(text)
    return path


def test_a_tiny_backbone_keeps_its_own_size_unless_told():
    # vit_tiny_test pretrained at 392 px (the METHODS default) took minutes per step on a laptop
    from greenfm.workflows.towers import image_tower

    assert image_tower("random", "vit_tiny_test", None).img_size == (32, 32)
    assert image_tower("random", "vit_tiny_test", 64).img_size == (64, 64)
