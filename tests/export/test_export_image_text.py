"""``greenfm export`` of an image-text (UniCL) run: every tower and the heads in one checked model folder,
the run export's latents reproduced, tampering refused, and each tower loadable without greenfm."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from greenfm.data.contract import Contract
from greenfm.errors import BadInputError, GreenfmError
from greenfm.export import REFERENCE_TEXT, export_model, load_exported
from greenfm.models.export import is_model_folder, load_exported_heads, load_exported_towers
from greenfm.models.image_text import ImageTextModel
from greenfm.models.weights import file_sha256

CONTRACT = Contract(modality="xray", size=32)
FINDINGS = ["cardiomegaly", "pleural_effusion", "pneumothorax"]
REPORTS = [
    "The heart is enlarged. No pleural effusion.",
    "Small left pleural effusion. No pneumothorax.",
    "Large right pneumothorax with a visible pleural line.",
    "Heart size is normal. The lungs are clear.",
]
CHECKS_AND_CARD = {"contract.json", "metadata.json", "MODEL_CARD.md", "fixture.png", "reference_embeddings.npy",
                   "reference_embeddings.json", "reference_text_embeddings.npy", "reference_latents.npy"}  # fmt: skip
TEXT_FILES = {"text/config.json", "text/model.safetensors", "text/tokenizer.json", "text/tokenizer_config.json",
              "text/greenfm_text.json"}  # fmt: skip


@pytest.fixture(scope="module")
def unicl_run(tmp_path_factory) -> Path:
    """A real UniCL run on tiny towers (engine fit, then the run's exported/ as ``greenfm pretrain`` writes it)."""
    from greenfm.engine import TrainConfig, fit, write_run_config
    from greenfm.methods.registry import get_method
    from greenfm.models.backbones import create_encoder
    from greenfm.models.export import export_towers
    from greenfm.models.text_tiny import tiny_text_tower

    run = tmp_path_factory.mktemp("unicl") / "run"
    torch.manual_seed(0)
    image = create_encoder("vit_tiny_test", img_size=32)
    text = tiny_text_tower(REPORTS * 4, max_length=24)
    recipe = get_method("unicl").from_towers({"image": image, "text": text}, {"embed_dim": 16}, findings=FINDINGS)
    g = torch.Generator().manual_seed(0)
    samples = [{"image": torch.randn(3, 32, 32, generator=g), "report": REPORTS[i % 4], "index": i,
                "labels": torch.tensor([float(i % 2), 0.0, float(i % 3 == 0)])} for i in range(16)]  # fmt: skip
    record = {"recipe": "unicl", "encoder_spec": image.spec, "contract": CONTRACT.to_dict(), "flags": recipe.flags,
              "towers": {"image": image.spec, "text": text.spec}, "init_weights": image.weights_source}  # fmt: skip
    write_run_config(run, {"pretrain": {"recipe": "unicl"}, "record": record}, manifest_hash="0123abcd", seed=0)
    config = TrainConfig(epochs=2, batch_size=8, lr=1e-3, num_workers=0, accelerator="cpu", track_energy=False,
                         progress_bar=False, checkpoint_every_epochs=None)  # fmt: skip
    fit(recipe, samples, config, run, run_record=record, export=False)
    export_towers(recipe.export_towers(), run / "exported", heads=recipe.export_heads(), preprocessing=CONTRACT,
                  metadata=record)  # fmt: skip
    return run


@pytest.fixture(scope="module")
def model_dir(unicl_run, tmp_path_factory) -> Path:
    return export_model(unicl_run, tmp_path_factory.mktemp("export") / "model")


def _one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert isinstance(exc_info.value, GreenfmError) and "\n" not in message
    return message


def test_the_model_folder_is_the_run_export_plus_checks_and_card(unicl_run, model_dir):
    run_export = unicl_run / "exported"
    ours = {p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file()}
    theirs = {p.relative_to(run_export).as_posix() for p in run_export.rglob("*") if p.is_file()}
    assert theirs <= ours  # same file names for every tower and the heads
    assert ours - theirs == CHECKS_AND_CARD
    for name in TEXT_FILES | {"heads.safetensors"}:  # copied byte for byte
        assert (model_dir / name).read_bytes() == (run_export / name).read_bytes(), name

    config = json.loads((model_dir / "config.json").read_text())
    run_config = json.loads((run_export / "config.json").read_text())
    assert is_model_folder(model_dir) and not is_model_folder(run_export)
    assert config["heads"] == run_config["heads"] == {"image_projection": [16, 64], "text_projection": [16, 32],
                                                      "logit_scale": [1]}  # fmt: skip
    for name, entry in run_config["towers"].items():
        assert {k: config["towers"][name][k] for k in entry} == entry
    assert config["towers"]["text"]["embed_dim"] == 32 and config["fixture"]["text"] == REFERENCE_TEXT
    assert config["metadata"]["flags"] == run_config["metadata"]["flags"]

    metadata = json.loads((model_dir / "metadata.json").read_text())
    assert set(metadata["files"]) == ours - {"metadata.json", "MODEL_CARD.md"}  # every file is hashed
    assert metadata["task"].startswith("image-text embedding")
    assert metadata["network_data_format"]["inputs"]["text"]["max_length"] == 24
    outputs = metadata["network_data_format"]["outputs"]
    assert outputs["text_embedding"]["num_channels"] == 32 and outputs["image_latent"]["num_channels"] == 16


def test_loading_gives_the_run_exports_towers_and_latents(unicl_run, model_dir):
    from greenfm.workflows.inputs import load_encoder, load_image_text

    exported = load_exported(model_dir)  # checks hashes, contract, image and text references
    assert set(exported.towers) == {"image", "text"} and set(exported.heads) == {"image_projection", "text_projection",
                                                                                 "logit_scale"}  # fmt: skip
    run_model = ImageTextModel.from_export(unicl_run)
    x = torch.cat([exported.fixture_input(), torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))])
    expected_images, expected_texts = run_model.encode_images(x), run_model.encode_texts(REPORTS)
    for model in (exported.image_text, ImageTextModel.from_export(model_dir), load_image_text(model_dir)):
        assert torch.equal(model.encode_images(x), expected_images)
        assert torch.equal(model.encode_texts(REPORTS), expected_texts)
        assert model.logit_scale == run_model.logit_scale and model.pool == run_model.pool
    latents = np.load(model_dir / "reference_latents.npy")
    assert latents.shape == (2, 16)
    assert torch.equal(torch.from_numpy(latents[:1]), run_model.encode_images(x[:1]))  # the same batch of one
    assert torch.equal(torch.from_numpy(latents[1:]), run_model.encode_texts([REFERENCE_TEXT]))
    assert torch.equal(torch.from_numpy(np.load(model_dir / "reference_text_embeddings.npy")),
                       run_model.text.encode([REFERENCE_TEXT]))  # fmt: skip

    # the models-layer loaders read the model folder directly: the next stage can start from it
    towers, run_towers = load_exported_towers(model_dir), load_exported_towers(unicl_run / "exported")
    assert set(towers) == {"image", "text"}
    for name in towers:
        for (key, a), (_, b) in zip(towers[name].state_dict().items(), run_towers[name].state_dict().items()):
            assert torch.equal(a, b), f"{name}.{key}"
    heads = load_exported_heads(model_dir)
    assert all(torch.equal(v, load_exported_heads(unicl_run / "exported")[k]) for k, v in heads.items())
    assert towers["image"].preprocessing == CONTRACT.to_dict() == load_encoder(model_dir).preprocessing
    assert torch.equal(load_encoder(model_dir).embed(x), run_towers["image"].embed(x))


@pytest.mark.parametrize(
    "change",
    ["text weights", "tokenizer", "added tokenizer file", "heads", "removed text file"],
)
def test_a_changed_text_tower_or_heads_file_is_refused(model_dir, tmp_path, change):
    folder = shutil.copytree(model_dir, tmp_path / "copy")
    if change == "text weights":
        state = load_file(str(folder / "text/model.safetensors"))
        key = next(iter(state))
        state[key] = state[key] * 1.01
        save_file(state, str(folder / "text/model.safetensors"), metadata={"format": "pt"})
        expected = "text/model.safetensors was changed after export"
    elif change == "tokenizer":
        path = folder / "text/tokenizer.json"
        path.write_text(path.read_text().replace('"lowercase": true', '"lowercase": false'))
        expected = "text/tokenizer.json was changed after export"
    elif change == "added tokenizer file":
        (folder / "text/added_tokens.json").write_text('{"[NEW]": 999}')
        expected = "text/added_tokens.json was added after export"
    elif change == "heads":
        heads = load_file(str(folder / "heads.safetensors"))
        heads["logit_scale"] = heads["logit_scale"] + 1
        save_file(heads, str(folder / "heads.safetensors"), metadata={"format": "pt"})
        expected = "heads.safetensors was changed after export"
    else:
        (folder / "text/tokenizer_config.json").unlink()
        expected = "text/tokenizer_config.json is missing from the export"
    with pytest.raises(BadInputError) as exc_info:
        load_exported(folder)
    assert expected in _one_line(exc_info)
    with pytest.raises(BadInputError, match=expected):  # the models-layer loaders check what they read
        ImageTextModel.from_export(folder)
    part = ["heads.safetensors"] if change == "heads" else ["text"]
    with pytest.raises(BadInputError, match=expected):
        load_exported_heads(folder) if change == "heads" else load_exported_towers(folder, part)


def test_a_text_tower_that_no_longer_reproduces_its_reference_is_refused(model_dir, tmp_path):
    folder = shutil.copytree(model_dir, tmp_path / "copy")
    for name, what in (("reference_text_embeddings.npy", "text tower"), ("reference_latents.npy", "reference latents")):
        original = np.load(model_dir / name)
        np.save(folder / name, original + 0.1)
        metadata = json.loads((folder / "metadata.json").read_text())
        metadata["files"][name] = file_sha256(folder / name)
        (folder / "metadata.json").write_text(json.dumps(metadata))
        with pytest.raises(BadInputError) as exc_info:
            load_exported(folder)
        assert what in _one_line(exc_info)
        load_exported(folder, verify=False)  # the integrity checks alone pass
        np.save(folder / name, original)
        metadata["files"][name] = file_sha256(folder / name)
        (folder / "metadata.json").write_text(json.dumps(metadata))
    load_exported(folder)


def test_every_tower_loads_without_greenfm(model_dir):
    """The image tower in plain timm, the text tower in plain transformers, the heads from safetensors,
    following the model card's recipe: the same latents as greenfm's."""
    from transformers import AutoModel, AutoTokenizer

    config = json.loads((model_dir / "config.json").read_text())
    image_model = timm.create_model(config["model"]["name"], pretrained=False, **config["model"]["kwargs"]).eval()
    image_model.load_state_dict(load_file(str(model_dir / "model.safetensors")))  # strict
    text_model = AutoModel.from_pretrained(str(model_dir / "text")).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir / "text"))
    heads = load_file(str(model_dir / "heads.safetensors"))
    exported = load_exported(model_dir)
    x = exported.fixture_input()
    with torch.no_grad():
        image = F.normalize(image_model.forward_features(x).mean(dim=1) @ heads["image_projection"].T, dim=-1)
        tokens = tokenizer([REFERENCE_TEXT, *REPORTS], padding=True, truncation=True, max_length=24,
                           return_tensors="pt")  # fmt: skip
        hidden = text_model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).last_hidden_state
        texts = F.normalize(hidden[:, 0] @ heads["text_projection"].T, dim=-1)  # the card's recipe for pool "cls"
    latents = torch.from_numpy(np.load(model_dir / "reference_latents.npy"))
    torch.testing.assert_close(image[0], latents[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(texts[0], latents[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(texts[1:], exported.image_text.encode_texts(REPORTS), rtol=1e-5, atol=1e-6)


def test_the_card_describes_every_tower_and_zero_shot_scores(model_dir):
    card = (model_dir / "MODEL_CARD.md").read_text()
    for text in (
        "## Towers",
        "| text | `text/`",
        "from `greenfm-tiny-bert`",
        "pool `cls`, at most 24 tokens per text, tokenizer lower-cases: yes",
        "`heads.safetensors`",
        "## Zero-shot scores",
        "p = torch.sigmoid(image @ (positive - negative))",
        'AutoModel.from_pretrained("text")',
        "| `text/model.safetensors` |",
        "| `heads.safetensors` |",
        "## How to load",
    ):
        assert text in card, text
    assert card.index("## Towers") < card.index("## Zero-shot scores") < card.index("## How to load")


def test_an_image_only_model_folder_is_not_an_image_text_model(tmp_path):
    from greenfm.models import create_encoder, export_encoder
    from greenfm.workflows.inputs import load_image_text

    run = tmp_path / "run"
    export_encoder(create_encoder("vit_tiny_test", img_size=32), run / "exported", preprocessing=CONTRACT)
    folder = export_model(run, tmp_path / "model")
    exported = load_exported(folder)
    assert set(exported.towers) == {"image"} and exported.text is None and exported.heads == {}
    with pytest.raises(BadInputError, match="not an image-text model"):
        load_image_text(folder)
    with pytest.raises(BadInputError, match="not an image-text model"):
        ImageTextModel.from_export(folder)
