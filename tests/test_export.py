"""``greenfm export``: plain timm weights, exact reference embeddings, LoRA merged, tampering refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset

from greenfm.data.contract import Contract, ContractMismatchError
from greenfm.errors import BadInputError, ConfigError, GreenfmError
from greenfm.export import export_model, fixture_array, load_exported
from greenfm.models.weights import file_sha256

CONTRACT = Contract(modality="xray", size=32)
EXPORT_FILES = {
    "model.safetensors",
    "config.json",
    "contract.json",
    "metadata.json",
    "MODEL_CARD.md",
    "fixture.png",
    "reference_embeddings.npy",
    "reference_embeddings.json",
}


class Images(Dataset):
    """Seeded 32 x 32 images with two learnable findings (bright; checkerboard)."""

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, 2, (n, 2), generator=g).float()
        checker = (torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2 * 2.0 - 1.0
        noise = 0.3 * torch.randn(n, 3, 32, 32, generator=g)
        self.images = noise + self.labels[:, 0, None, None, None] + 0.8 * self.labels[:, 1, None, None, None] * checker

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "labels": self.labels[i]}


def train_config(epochs: int):
    from greenfm.engine import TrainConfig

    return TrainConfig(
        epochs=epochs,
        batch_size=8,
        lr=1e-3,
        num_workers=0,
        progress_bar=False,
        track_energy=False,
        accelerator="cpu",
        log_every_steps=1,
    )


@pytest.fixture(scope="module")
def tr_run(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """A real token-reconstruction run (engine fit + the method's own export); returns (run, student)."""
    from greenfm.engine import fit, write_run_config
    from greenfm.methods.token_reconstruction import TokenReconstruction
    from greenfm.models import create_encoder

    run = tmp_path_factory.mktemp("tr") / "run"
    torch.manual_seed(0)
    encoder = create_encoder("vit_tiny_test")
    method = TokenReconstruction(encoder)
    write_run_config(run, {"method": "token-reconstruction", "encoder": encoder.spec}, manifest_hash="0123abcd", seed=0)
    record = {
        "method": "token-reconstruction",
        "encoder_spec": encoder.spec,
        "contract": CONTRACT.to_dict(),
        "flags": method.flags,
    }
    fit(method, Images(16, 0), train_config(2), run, run_record=record)
    method.export(run / "exported", preprocessing=CONTRACT.to_dict())
    return run, method.student.eval()


@pytest.fixture(scope="module")
def tr_export(tr_run, tmp_path_factory) -> Path:
    return export_model(tr_run[0], tmp_path_factory.mktemp("tr_export") / "model")


def _lora_classifier(seed: int = 0):
    """A LoRA ViT classifier with large, non-zero adapters and head (as after real training)."""
    from greenfm.adapt.classifier import ClassifierConfig, build_classifier
    from greenfm.adapt.objective import ClassifierMethod
    from greenfm.models import create_encoder

    torch.manual_seed(seed)
    encoder = create_encoder("vit_tiny_test")
    model = build_classifier(encoder.model, ClassifierConfig(num_classes=2, mode="lora", rank=4))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name or name.startswith("head."):
                param.copy_(0.2 * torch.randn_like(param))
    return encoder.spec, model, ClassifierMethod(model).eval()


# ----------------------------------------------------------------------------- encoder exports


def test_encoder_export_reproduces_its_reference_embeddings_exactly(tr_run, tr_export):
    run, student = tr_run
    assert {p.name for p in tr_export.iterdir()} == EXPORT_FILES
    exported = load_exported(tr_export)
    reference = torch.from_numpy(np.load(tr_export / "reference_embeddings.npy"))
    assert reference.shape == (1, 64) and reference.dtype == torch.float32
    assert torch.equal(exported.embed(exported.fixture_input()), reference)
    stored = json.loads((tr_export / "reference_embeddings.json").read_text())
    assert torch.equal(torch.tensor([stored["embedding"]], dtype=torch.float32), reference)
    # the trained student itself, mean of all final-normed tokens
    with torch.no_grad():
        assert torch.equal(student.forward_features(exported.fixture_input()).mean(dim=1), reference)


def test_a_model_folder_serves_as_model_for_every_verb_with_its_own_contract(tr_export, tmp_path):
    from greenfm.workflows.inputs import encoder_contract, load_encoder

    encoder = load_encoder(tr_export)  # what embed, probe, finetune and pretrain --init do with a folder
    assert encoder_contract(encoder, None) == CONTRACT
    exported = load_exported(tr_export)
    x = exported.fixture_input()
    assert torch.equal(encoder.embed(x), torch.from_numpy(np.load(tr_export / "reference_embeddings.npy")))
    weights = tr_export / "model.safetensors"
    assert encoder.weights_source == {"kind": "file", "path": str(weights.resolve()), "sha256": file_sha256(weights)}
    assert encoder.has_pretrained_source  # so pretrain --init FOLDER does not take it for a random teacher
    tampered = shutil.copytree(tr_export, tmp_path / "tampered")
    (tampered / "contract.json").write_text((tampered / "contract.json").read_text().replace("xray", "fundus"))
    with pytest.raises(GreenfmError):
        load_encoder(tampered)  # loaded through the checked loader


def test_a_model_folder_embeds_with_the_pooling_it_was_exported_with(tr_run, tmp_path):
    from greenfm.workflows.inputs import load_encoder

    folder = export_model(tr_run[0], tmp_path / "cls", pool="cls")
    encoder = load_encoder(folder)
    x = load_exported(folder).fixture_input()
    assert encoder.resolve_pool(None) == "cls"
    assert torch.equal(encoder.embed(x), torch.from_numpy(np.load(folder / "reference_embeddings.npy")))


@pytest.mark.parametrize("kind", ["run", "model"])
def test_truncated_weights_give_one_line_naming_the_file(tr_run, tr_export, tmp_path, kind):
    from greenfm.workflows.inputs import load_encoder

    folder = shutil.copytree(tr_run[0] / "exported" if kind == "run" else tr_export, tmp_path / kind)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    if kind == "model":  # keep the recorded hash right, so the loader gets as far as reading the weights
        metadata = json.loads((folder / "metadata.json").read_text())
        metadata["files"]["model.safetensors"] = file_sha256(weights)
        (folder / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(BadInputError) as info:
        load_encoder(folder)
    assert "model.safetensors" in str(info.value) and "\n" not in str(info.value)


def test_single_tower_export_has_the_run_export_layout(tr_run, tr_export):
    from greenfm.models.export import load_exported_heads, load_exported_towers

    config = json.loads((tr_export / "config.json").read_text())
    run_config = json.loads((tr_run[0] / "exported" / "config.json").read_text())
    assert config["towers"] == {"image": {"path": ".", "kind": "image"}} and config["heads"] == {}
    assert config["metadata"] == run_config["metadata"] and config["model"] == run_config["model"]
    towers = load_exported_towers(tr_export)  # the models layer reads a model folder too, hashes checked
    x = load_exported(tr_export).fixture_input()
    assert set(towers) == {"image"} and load_exported_heads(tr_export) == {}
    assert torch.equal(towers["image"].embed(x), torch.from_numpy(np.load(tr_export / "reference_embeddings.npy")))


def test_export_loads_in_plain_timm(tr_export):
    config = json.loads((tr_export / "config.json").read_text())
    model = timm.create_model(config["model"]["name"], pretrained=False, **config["model"]["kwargs"])
    model.load_state_dict(load_file(str(tr_export / "model.safetensors")))
    model.eval()
    x = load_exported(tr_export).fixture_input()
    with torch.no_grad():
        embedding = model.forward_features(x).mean(dim=1)
    assert config["pooling"] == "mean-all-tokens" and config["pooling_recipe"].startswith("model.forward_features(x)")
    assert torch.equal(embedding, torch.from_numpy(np.load(tr_export / "reference_embeddings.npy")))
    assert Contract.from_dict(json.loads((tr_export / "contract.json").read_text())) == CONTRACT


def test_engine_artifacts_alone_export_the_same_model(tr_run, tr_export, tmp_path):
    reference = np.load(tr_export / "reference_embeddings.npy")
    run = shutil.copytree(tr_run[0], tmp_path / "run")
    (run / "exported" / "model.safetensors").unlink()
    (run / "exported" / "config.json").unlink()  # only the engine's last.safetensors is left
    out = export_model(run, tmp_path / "from_last")
    assert json.loads((out / "config.json").read_text())["source_run"]["weights"] == "exported/last.safetensors"
    shutil.rmtree(run / "exported")  # only checkpoints/last.ckpt is left
    out = export_model(run, tmp_path / "from_ckpt")
    assert json.loads((out / "config.json").read_text())["source_run"]["weights"] == "checkpoints/last.ckpt"
    for folder in (tmp_path / "from_last", tmp_path / "from_ckpt"):
        assert np.array_equal(np.load(folder / "reference_embeddings.npy"), reference)


# ----------------------------------------------------------------------------- fine-tuned classifiers


def test_real_finetune_run_exports_the_selected_merged_classifier(tmp_path):
    from greenfm.adapt.classifier import ClassifierConfig
    from greenfm.adapt.finetune import finetune
    from greenfm.engine.checkpoint import load_checkpoint
    from greenfm.models import create_encoder

    torch.manual_seed(0)
    encoder = create_encoder("vit_tiny_test")
    run = tmp_path / "ft"
    finetune(
        encoder.model,
        Images(32, 0),
        Images(16, 1),
        Images(16, 2),
        run_dir=run,
        names=["bright", "texture"],
        classifier=ClassifierConfig(num_classes=2, mode="lora", rank=4),
        train_config=train_config(2),
        run_record={"encoder_spec": encoder.spec, "contract": CONTRACT.to_dict()},
        echo=lambda _: None,
    )
    exported = load_exported(export_model(run, tmp_path / "model"))
    config = exported.config
    assert config["task"] == {
        "type": "multilabel",
        "num_classes": 2,
        "names": ["bright", "texture"],
        "activation": "sigmoid",
        "adaptation": "lora",
    }
    assert config["pooling"] == "pre-logits" and config["source_run"]["weights"] == "exported/best.safetensors"
    assert config["source_run"]["lora_merged"] and config["model"]["kwargs"]["global_pool"] == "avg"

    _, model, method = _lora_classifier()  # same architecture; load the selected epoch into it
    method.load_state_dict(load_checkpoint(run / "checkpoints" / "best.ckpt")["model"])
    x = Images(4, 9).images
    with torch.no_grad():
        torch.testing.assert_close(exported.logits(x), method(x), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(exported.embed(x), model.pre_logits(x), rtol=1e-5, atol=1e-6)
    card = (tmp_path / "model" / "MODEL_CARD.md").read_text()
    assert "| bright |" in card and "multilabel head, 2 outputs (sigmoid)" in card


def test_lora_checkpoint_is_merged_into_a_plain_timm_classifier(tmp_path):
    from greenfm.engine.checkpoint import save_checkpoint
    from greenfm.models import create_encoder, export_encoder

    _, model, method = _lora_classifier(seed=3)
    run = tmp_path / "ft"
    save_checkpoint({"model": method.state_dict()}, run / "checkpoints" / "best.ckpt")
    (run / "finetune.json").write_text(json.dumps({"classifier": model.config.to_dict(), "test": None}))
    base = export_encoder(create_encoder("vit_tiny_test"), tmp_path / "base")  # the model fine-tuning started from
    config = {"finetune": {"model": str(base), "mode": "lora"}, "record": {"contract": CONTRACT.to_dict()}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))  # as greenfm finetune writes it: no encoder_spec
    out = export_model(run, tmp_path / "model")
    config = json.loads((out / "config.json").read_text())
    assert config["source_run"] == {**config["source_run"], "weights": "checkpoints/best.ckpt", "lora_merged": True}

    plain = timm.create_model(config["model"]["name"], pretrained=False, **config["model"]["kwargs"]).eval()
    plain.load_state_dict(load_file(str(out / "model.safetensors")))  # strict: no LoRA keys are left
    x = Images(4, 5).images
    with torch.no_grad():
        torch.testing.assert_close(plain(x), method(x), rtol=1e-4, atol=1e-5)
    qkv = load_file(str(out / "model.safetensors"))["blocks.0.attn.qkv.weight"]
    original = dict(model.named_parameters())["backbone.model.blocks.0.attn.qkv.base_layer.weight"]
    delta = qkv - original
    assert delta[:64].abs().max() > 1e-3 and delta[128:].abs().max() > 1e-3  # Q and V adapted
    assert delta[64:128].abs().max() == 0  # K untouched (med-peft preset)


# ----------------------------------------------------------------------------- refusals


def _copy(export: Path, tmp_path: Path) -> Path:
    return shutil.copytree(export, tmp_path / "copy")


def _one_line_error(exc_info) -> str:
    message = str(exc_info.value)
    assert isinstance(exc_info.value, GreenfmError) and "\n" not in message
    return message


def test_edited_contract_is_refused(tr_export, tmp_path):
    export = _copy(tr_export, tmp_path)
    contract = json.loads((export / "contract.json").read_text())
    (export / "contract.json").write_text(json.dumps({**contract, "size": [64, 64]}))
    with pytest.raises(ContractMismatchError) as exc_info:
        load_exported(export)
    assert "size (64, 64) (expected (32, 32))" in _one_line_error(exc_info)


def test_a_pipeline_with_another_contract_is_refused(tr_export):
    with pytest.raises(ContractMismatchError) as exc_info:
        load_exported(tr_export, contract="imagenet")
    assert "preprocessing contract differs" in _one_line_error(exc_info)
    assert load_exported(tr_export, contract=CONTRACT, verify=False).contract == CONTRACT


def test_changed_weights_are_refused(tr_export, tmp_path):
    export = _copy(tr_export, tmp_path)
    state = load_file(str(export / "model.safetensors"))
    state["norm.weight"] = state["norm.weight"] * 1.01
    save_file(state, str(export / "model.safetensors"))
    with pytest.raises(BadInputError) as exc_info:
        load_exported(export)
    assert "model.safetensors was changed after export" in _one_line_error(exc_info)
    from greenfm.models.export import load_exported_towers

    with pytest.raises(BadInputError, match="model.safetensors was changed after export"):
        load_exported_towers(export)


def test_a_model_that_no_longer_reproduces_its_reference_is_refused(tr_export, tmp_path):
    export = _copy(tr_export, tmp_path)
    np.save(export / "reference_embeddings.npy", np.load(export / "reference_embeddings.npy") + 0.1)
    metadata = json.loads((export / "metadata.json").read_text())
    metadata["files"]["reference_embeddings.npy"] = file_sha256(export / "reference_embeddings.npy")
    (export / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(BadInputError) as exc_info:
        load_exported(export)
    assert "does not reproduce its reference embeddings" in _one_line_error(exc_info)
    load_exported(export, verify=False)  # the integrity checks alone pass


def test_an_incomplete_export_is_refused(tr_export, tmp_path):
    export = _copy(tr_export, tmp_path)
    (export / "metadata.json").unlink()
    with pytest.raises(BadInputError) as exc_info:
        load_exported(export)
    assert "not a greenfm model export (metadata.json is missing)" in _one_line_error(exc_info)


def test_export_refusals(tr_run, tr_export, tmp_path):
    run = tr_run[0]
    with pytest.raises(BadInputError, match="not empty"):
        export_model(run, tr_export)
    with pytest.raises(ContractMismatchError, match="bit_depth|size|modality"):
        export_model(run, tmp_path / "a", contract="cxr-medpeft")
    bare = shutil.copytree(run, tmp_path / "bare")
    (bare / "compute.json").unlink()
    shutil.rmtree(bare / "exported")  # no contract left anywhere in the run
    with pytest.raises(ConfigError, match="records no preprocessing contract"):
        export_model(bare, tmp_path / "b")
    with pytest.raises(ConfigError, match=r"takes \(32, 32\) images but the contract gives \(64, 64\)"):
        export_model(bare, tmp_path / "c", contract=CONTRACT.replace(size=64))
    export_model(bare, tmp_path / "d", contract=CONTRACT)  # a run without a contract exports with one given


# ----------------------------------------------------------------------------- card, metadata, fixture


def test_model_card_and_metadata(tr_export):
    card = (tr_export / "MODEL_CARD.md").read_text()
    for text in (
        "Research use only",
        "not for clinical decisions",
        "## Training data",
        "`0123abcd`",
        "## Compute and carbon",
        "| Energy | unavailable |",
        "timm.create_model",
        "## Limitations",
        "Initialised from random weights",
        "## Preprocessing contract",
        '`modality` | "xray"',
    ):
        assert text.lower() in card.lower(), text
    metadata = json.loads((tr_export / "metadata.json").read_text())
    image = metadata["network_data_format"]["inputs"]["image"]
    assert image["num_channels"] == 3 and image["spatial_shape"] == [32, 32] and image["modality"] == "xray"
    assert metadata["network_data_format"]["outputs"]["embedding"]["num_channels"] == 64
    assert metadata["intended_use"].startswith("Research use only")
    assert metadata["compute"]["optimizer_steps"] == 4 and metadata["compute"]["energy_kwh"] == "unavailable"
    assert set(metadata["files"]) == EXPORT_FILES - {"metadata.json", "MODEL_CARD.md"}


def test_fixture_is_deterministic_and_follows_the_contract(tr_run, tmp_path):
    grey = fixture_array(CONTRACT)
    assert grey.dtype == np.uint8 and grey.shape == (80, 96) and np.array_equal(grey, fixture_array(CONTRACT))
    assert grey.std() > 20
    assert fixture_array(Contract(modality="photo", size=32)).shape == (80, 96, 3)
    given = np.arange(40 * 50, dtype=np.uint16).reshape(40, 50) * 20
    out = export_model(tr_run[0], tmp_path / "given", fixture_image=given)
    assert not json.loads((out / "config.json").read_text())["fixture"]["generated"]
    exported = load_exported(out)
    assert torch.equal(
        exported.embed_file(out / "fixture.png")[None], torch.from_numpy(np.load(out / "reference_embeddings.npy"))
    )


def test_every_file_of_a_model_folder_has_one_mode(tr_export):
    import stat

    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tr_export.rglob("*") if p.is_file()}
    assert modes["model.safetensors"] == modes["config.json"], modes  # safetensors alone wrote 0600


def test_plain_code_following_the_card_reproduces_the_reference_embeddings(tr_export):
    import re

    card = (tr_export / "MODEL_CARD.md").read_text()
    steps = re.search(r"step by step.*?```python\n(.*?)```", card, re.S).group(1)
    cfg = json.loads((tr_export / "config.json").read_text())
    model = timm.create_model(cfg["model"]["name"], pretrained=False, **cfg["model"]["kwargs"]).eval()
    model.load_state_dict(load_file(tr_export / "model.safetensors"))
    reference = json.loads((tr_export / "reference_embeddings.json").read_text())
    scope: dict = {}
    exec(steps.replace('"image.png"', repr(str(tr_export / reference["fixture"]))), scope)  # the card's own code
    recipe = re.search(r"embedding = (.*?)   # x:", card).group(1)
    with torch.no_grad():
        embedding = eval(recipe, {"model": model, "x": scope["x"]}).numpy()
    expected = np.load(tr_export / "reference_embeddings.npy")
    np.testing.assert_allclose(embedding.reshape(expected.shape), expected, rtol=1e-3, atol=1e-4)
