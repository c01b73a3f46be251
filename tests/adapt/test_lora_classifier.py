"""The MED-PEFT classifier: patch-mean head, final norm removed, layer-wise lr decay."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from greenfm.adapt.classifier import build_classifier
from greenfm.adapt.layer_decay import parameter_depth
from greenfm.errors import ConfigError, GreenfmError


def tiny_vit(**overrides) -> nn.Module:
    options = dict(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2, num_classes=0)
    options.update(overrides)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, **options)


def test_head_pools_patch_tokens_only_and_the_final_norm_is_gone():
    torch.manual_seed(0)
    model = build_classifier(tiny_vit(reg_tokens=4), num_classes=5, mode="full").eval()
    assert isinstance(model.backbone.norm, nn.Identity) and isinstance(model.backbone.head, nn.Identity)
    assert model.head.num_prefix_tokens == 5  # CLS + 4 registers
    x = torch.randn(2, 3, 32, 32)
    tokens = model.forward_features(x)
    assert tokens.shape == (2, 5 + 16, 32)
    norm = model.head.fc_norm
    pooled = nn.functional.layer_norm(tokens[:, 5:].mean(1), (32,), norm.weight, norm.bias, 1e-6)
    torch.testing.assert_close(model.pre_logits(x), pooled)
    torch.testing.assert_close(model(x), model.head.fc(pooled))


def test_head_starts_near_zero():
    torch.manual_seed(0)
    model = build_classifier(tiny_vit(embed_dim=256, num_heads=4), num_classes=64, mode="lora")
    fc = model.head.fc
    assert torch.count_nonzero(fc.bias) == 0
    assert 1e-5 < fc.weight.std().item() < 3e-5  # trunc-normal std 2e-5
    assert isinstance(model.head.fc_norm, nn.LayerNorm) and model.head.fc_norm.eps == 1e-6


def test_linear_mode_keeps_the_frozen_backbone_in_eval():
    model = build_classifier(tiny_vit(drop_path_rate=0.5), num_classes=2, mode="linear").train()
    assert model.head.training and not model.backbone.training
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x), model(x))  # no drop-path noise from a frozen backbone


def test_parameter_depths():
    assert parameter_depth("backbone.model.patch_embed.proj.weight", 12) == 0
    assert parameter_depth("backbone.pos_embed", 12) == 0
    assert parameter_depth("backbone.cls_token", 12) == 0
    assert parameter_depth("backbone.model.blocks.0.attn.qkv.lora_A.default.weight", 12) == 1
    assert parameter_depth("backbone.blocks.11.mlp.fc2.weight", 12) == 12
    assert parameter_depth("head.fc.weight", 12) == 13


def scales_by_name(groups):
    return {n: (g["lr_scale"], g["weight_decay"]) for g in groups for n in g["param_names"]}


def test_lora_groups_decay_by_block_and_head_is_not_scaled():
    model = build_classifier(tiny_vit(), num_classes=2, mode="lora", rank=2)
    groups = model.optimizer_groups(weight_decay=0.05)
    by_name = scales_by_name(groups)
    assert set(by_name) == {n for n, p in model.named_parameters() if p.requires_grad}
    for i in range(3):
        for part in ("lora_A", "lora_B"):
            scale, wd = by_name[f"backbone.model.blocks.{i}.attn.qkv.{part}.default.weight"]
            assert scale == pytest.approx(0.65 ** (3 - i)) and wd == 0.05
    assert by_name["head.fc.weight"] == (1.0, 0.05)
    assert by_name["head.fc.bias"] == (1.0, 0.0)
    assert by_name["head.fc_norm.weight"] == (1.0, 0.0)
    # one optimiser takes the groups as they are
    torch.optim.AdamW(groups, lr=1e-3)


def test_full_mode_puts_embeddings_at_depth_zero_and_decays_only_matrices():
    model = build_classifier(tiny_vit(), num_classes=2, mode="full")
    by_name = scales_by_name(model.optimizer_groups(weight_decay=0.1))
    assert len(by_name) == sum(1 for _ in model.parameters())
    for name in ("backbone.patch_embed.proj.weight", "backbone.pos_embed", "backbone.cls_token"):
        assert by_name[name][0] == pytest.approx(0.65**4)
    assert by_name["backbone.patch_embed.proj.bias"] == (pytest.approx(0.65**4), 0.0)
    assert by_name["backbone.blocks.2.norm1.weight"] == (pytest.approx(0.65), 0.0)
    assert by_name["backbone.blocks.0.mlp.fc1.weight"] == (pytest.approx(0.65**3), 0.1)
    params = dict(model.named_parameters())
    assert all((wd > 0) == (params[n].ndim >= 2) for n, (_, wd) in by_name.items())


def test_layer_decay_off_and_linear_mode():
    model = build_classifier(tiny_vit(), num_classes=2, mode="full", layer_decay=1.0)
    assert {g["lr_scale"] for g in model.optimizer_groups(0.05)} == {1.0}
    linear = build_classifier(tiny_vit(), num_classes=2, mode="linear")
    by_name = scales_by_name(linear.optimizer_groups(0.05))
    assert set(by_name) == {"head.fc_norm.weight", "head.fc_norm.bias", "head.fc.weight", "head.fc.bias"}
    assert {scale for scale, _ in by_name.values()} == {1.0}


def test_bad_options_and_backbones_are_one_line_errors():
    with pytest.raises(ConfigError, match="mode"):
        build_classifier(tiny_vit(), num_classes=2, mode="partial")
    with pytest.raises(ConfigError, match="rank"):
        build_classifier(tiny_vit(), num_classes=2, rank=0)
    with pytest.raises(GreenfmError, match="timm VisionTransformer"):
        build_classifier(nn.Linear(3, 3), num_classes=2)


def test_encoder_like_wrappers_are_unwrapped():
    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = tiny_vit()

    model = build_classifier(Encoder(), num_classes=2, mode="full")
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 2)
