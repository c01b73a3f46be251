"""Initial weights: local files round-trip, DINOv2 keys, pos-embed resampling, grey stems, offline hubs."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed

from greenfm.errors import BadInputError, ConfigError, GreenfmError
from greenfm.models import create_encoder
from greenfm.models.weights import file_sha256


def save_safetensors(model: torch.nn.Module, path) -> None:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def test_safetensors_round_trip_gives_identical_outputs(tmp_path):
    source = create_encoder("vit_tiny_test").eval()
    path = tmp_path / "tiny.safetensors"
    save_safetensors(source.model, path)
    loaded = create_encoder("vit_tiny_test", weights=path).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(source.forward_features(x), loaded.forward_features(x))
    assert loaded.weights_source == {"kind": "file", "path": str(path.resolve()), "sha256": file_sha256(path)}
    assert loaded.has_pretrained_source
    assert loaded.load_report.missing == [] and loaded.load_report.unexpected == []


def test_torch_state_dict_in_a_checkpoint_container(tmp_path):
    source = create_encoder("vit_tiny_test").eval()
    path = tmp_path / "tiny.pth"
    torch.save({"model": {f"module.{k}": v for k, v in source.model.state_dict().items()}, "epoch": 3}, path)
    loaded = create_encoder("vit_tiny_test", weights=path).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(source.embed(x), loaded.embed(x))


def test_dinov2_style_keys_are_converted(tmp_path):
    # DINOv2's own layout: pos_embed includes a CLS slot, registers are 'register_tokens', plus a mask token
    source = create_encoder("vit_tiny_test").eval()
    state = dict(source.model.state_dict())
    cls, pos, reg = state.pop("cls_token"), state.pop("pos_embed"), state.pop("reg_token")
    state["cls_token"] = cls
    state["pos_embed"] = torch.cat([torch.zeros_like(cls), pos], dim=1)
    state["register_tokens"] = reg
    state["mask_token"] = torch.zeros(1, 64)
    path = tmp_path / "dinov2_style.pth"
    torch.save(state, path)
    loaded = create_encoder("vit_tiny_test", weights=path).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(source.forward_features(x), loaded.forward_features(x))
    assert loaded.load_report.missing == [] and loaded.load_report.unexpected == []


def test_224_weights_resample_into_392(tmp_path):
    source = create_encoder("vit_small_patch14_reg4_dinov2", img_size=224)
    path = tmp_path / "vits14_224.safetensors"
    save_safetensors(source.model, path)
    loaded = create_encoder("vit_small_patch14_reg4_dinov2", weights=path, img_size=392)
    assert loaded.model.pos_embed.shape == (1, 784, 384)
    expected = resample_abs_pos_embed(source.model.pos_embed.detach(), new_size=(28, 28), old_size=(16, 16), num_prefix_tokens=0)
    torch.testing.assert_close(loaded.model.pos_embed.detach(), expected)
    assert loaded.load_report.resampled == ["pos_embed: (1, 256, 384) -> (1, 784, 384)"]
    assert torch.equal(loaded.model.blocks[3].mlp.fc1.weight, source.model.blocks[3].mlp.fc1.weight)
    with torch.no_grad():
        assert loaded.forward_features(torch.randn(1, 3, 392, 392)).shape == (1, 789, 384)


def test_grey_input_sums_rgb_patch_weights(tmp_path):
    source = create_encoder("vit_tiny_test")
    path = tmp_path / "rgb.safetensors"
    save_safetensors(source.model, path)
    grey = create_encoder("vit_tiny_test", weights=path, in_chans=1).eval()
    rgb_weight = source.model.patch_embed.proj.weight
    torch.testing.assert_close(grey.model.patch_embed.proj.weight, rgb_weight.sum(dim=1, keepdim=True))
    # a grey image through the grey model equals the same image replicated to RGB through the RGB model
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(grey.embed(x), source.eval().embed(x.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-5)
    assert grey.load_report.adapted == ["patch_embed.proj.weight: 1 input channel(s)"]


def test_mismatched_and_extra_keys_are_reported_not_raised(tmp_path):
    source = create_encoder("vit_tiny_test")
    state = dict(source.model.state_dict())
    state["head.weight"] = torch.zeros(10, 64)
    state.pop("norm.weight")
    path = tmp_path / "partial.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    loaded = create_encoder("vit_tiny_test", weights=path)
    assert loaded.load_report.unexpected == ["head.weight"]
    assert loaded.load_report.missing == ["norm.weight"]


def test_hub_name_offline_is_one_clear_line(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(GreenfmError) as info:
        create_encoder("vit_tiny_test", weights="hf-hub:timm/vit_small_patch14_reg4_dinov2.lvd142m")
    message = str(info.value)
    assert "\n" not in message and "weights='/path/to/model.safetensors'" in message
    assert "huggingface.co/timm/vit_small_patch14_reg4_dinov2.lvd142m" in message


def test_bad_weights_arguments():
    with pytest.raises(BadInputError, match="not found"):
        create_encoder("vit_tiny_test", weights="/nonexistent/model.safetensors")
    with pytest.raises(ConfigError, match="unknown weights"):
        create_encoder("vit_tiny_test", weights="imagenet")


def test_unreadable_file_is_a_bad_input(tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"not weights")
    with pytest.raises(BadInputError, match="cannot read weights"):
        create_encoder("vit_tiny_test", weights=path)


def test_a_file_for_another_model_is_refused(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"encoder.model.weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(BadInputError, match="no tensor in the file fits"):
        create_encoder("vit_tiny_test", weights=path)
