"""LoRA presets on timm ViTs: METHODS §6.1 parameter arithmetic, K rows untouched, merge equivalence."""

from __future__ import annotations

import pytest
import timm
import torch
from peft import LoraConfig, LoraModel
from torch import nn

from greenfm.adapt.classifier import build_classifier
from greenfm.adapt.lora import VARIANT_QV_FUSED, FusedQVLoraLinear, add_lora, lora_parameter_count
from greenfm.errors import ConfigError, GreenfmError


def vit_b16(num_classes: int = 14) -> nn.Module:
    """ViT-B/16@224 as in MED-PEFT, built on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        return timm.create_model("vit_base_patch16_224", pretrained=False, drop_path_rate=0.1)


def tiny_vit(**overrides) -> nn.Module:
    options = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=0)
    options.update(overrides)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, **options)


def train_a_few_steps(model: nn.Module, steps: int = 5, seed: int = 0) -> None:
    """AdamW on a random regression target: moves every trainable parameter."""
    torch.manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2)
    model.train()
    for _ in range(steps):
        x = torch.randn(4, 3, 32, 32)
        loss = (model(x) - torch.randn(4, model(x).shape[-1])).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


# ----------------------------------------------------------------------------- counts (METHODS §6.1 table)

TABLE_C14 = {4: (159_758, 0.186), 8: (307_214, 0.357), 16: (602_126, 0.697), 32: (1_191_950, 1.370)}


@pytest.mark.parametrize("rank", sorted(TABLE_C14))
def test_med_peft_trainable_counts_match_the_methods_table(rank):
    model = build_classifier(vit_b16(), num_classes=14, mode="lora", preset="med-peft", rank=rank)
    counts = model.parameter_counts()
    trainable, percent = TABLE_C14[rank]
    assert counts["lora"] == 36_864 * rank
    assert counts["trainable"] == trainable == 36_864 * rank + 1_536 + 769 * 14
    assert round(counts["trainable_percent"], 3) == percent
    assert counts["total"] - counts["lora"] == 85_809_422
    assert model.config.lora_variant == VARIANT_QV_FUSED


@pytest.mark.parametrize("num_classes, total", [(14, 85_809_422), (5, 85_802_501), (1, 85_799_425)])
def test_full_model_counts_match_the_methods_table(num_classes, total):
    model = build_classifier(vit_b16(), num_classes=num_classes, mode="full")
    counts = model.parameter_counts()
    assert counts["total"] == counts["trainable"] == total
    assert counts["lora"] == 0


def test_med_peft_shapes_are_one_pair_per_adapted_slice():
    model = build_classifier(vit_b16(), num_classes=14, mode="lora", rank=8)
    qkv = model.backbone.model.blocks[0].attn.qkv
    assert isinstance(qkv, FusedQVLoraLinear)
    assert qkv.lora_A["default"].weight.shape == (16, 768)  # [A_q; A_v]: 2r x 768
    assert qkv.lora_B["default"].weight.shape == (1536, 8)  # [B_q; B_v]: 1536 x r
    assert qkv.scaling["default"] == 32 / 8
    assert qkv.lora_dropout["default"].p == 0.1
    adapted = {name.split(".lora_")[0] for name, _ in model.named_parameters() if ".lora_" in name}
    assert adapted == {f"backbone.model.blocks.{i}.attn.qkv" for i in range(12)}


# ----------------------------------------------------------------------------- what trains


def test_trainable_parameters_per_mode():
    lora = build_classifier(tiny_vit(), num_classes=3, mode="lora")
    names = {n for n, p in lora.named_parameters() if p.requires_grad}
    assert names == {n for n, _ in lora.named_parameters() if ".lora_" in n or n.startswith("head.")}
    assert all(".lora_" in n for n in names if n.startswith("backbone."))  # biases, LayerNorms frozen

    linear = build_classifier(tiny_vit(), num_classes=3, mode="linear")
    assert {n for n, p in linear.named_parameters() if p.requires_grad} == {
        "head.fc_norm.weight", "head.fc_norm.bias", "head.fc.weight", "head.fc.bias"
    }
    full = build_classifier(tiny_vit(), num_classes=3, mode="full")
    assert all(p.requires_grad for p in full.parameters())


def test_broad_preset_adapts_qkv_proj_and_mlp_but_not_the_patch_embedding():
    model = build_classifier(tiny_vit(), num_classes=2, mode="lora", preset="broad", rank=2)
    lora_names = [n for n, _ in model.named_parameters() if ".lora_" in n]
    adapted = {n.split(".lora_")[0].removeprefix("backbone.model.") for n in lora_names}
    expected = {f"blocks.{i}.{m}" for i in range(2) for m in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")}
    assert adapted == expected
    # whole-weight LoRA per module: r x (in + out) each
    d = 32
    per_block = 2 * ((d + 3 * d) + (d + d) + (d + 4 * d) + (4 * d + d))
    assert lora_parameter_count(model) == 2 * per_block


# ----------------------------------------------------------------------------- K rows (METHODS §6.1 (a) vs (c))


def qkv_layers(model: nn.Module):
    return [m for m in model.modules() if hasattr(m, "lora_A") and "default" in m.lora_A]


def test_med_peft_update_is_zero_on_k_rows_after_training():
    vit = tiny_vit()
    before = [b.attn.qkv.weight.detach().clone() for b in vit.blocks]
    model = build_classifier(vit, num_classes=3, mode="lora", preset="med-peft", rank=2)
    train_a_few_steps(model)
    d = 32
    for layer in qkv_layers(model):
        delta = layer.get_delta_weight("default")
        assert delta.shape == (3 * d, d)
        assert torch.equal(delta[d : 2 * d], torch.zeros(d, d))  # K: exactly zero
        assert delta[:d].abs().max() > 0 and delta[2 * d :].abs().max() > 0  # Q and V moved
    merged = model.merged()
    for block, w0 in zip(merged.backbone.blocks, before):
        w = block.attn.qkv.weight
        assert torch.equal(w[d : 2 * d], w0[d : 2 * d])
        assert not torch.equal(w[:d], w0[:d]) and not torch.equal(w[2 * d :], w0[2 * d :])


def test_plain_peft_on_fused_qkv_changes_k_rows():
    """Why the custom layer exists: peft's own LoRA on ``qkv`` adapts K too (variant (a))."""
    vit = tiny_vit()
    model = LoraModel(vit, LoraConfig(r=2, lora_alpha=32, target_modules=["qkv"]), "default")
    model.model.head = nn.Linear(32, 3)
    train_a_few_steps(model.model)
    d = 32
    for layer in qkv_layers(model):
        assert not isinstance(layer, FusedQVLoraLinear)
        assert layer.get_delta_weight("default")[d : 2 * d].abs().max() > 0


# ----------------------------------------------------------------------------- merge for export


@pytest.mark.parametrize("preset", ["med-peft", "broad"])
def test_merged_model_gives_the_unmerged_outputs(preset):
    model = build_classifier(tiny_vit(reg_tokens=2), num_classes=4, mode="lora", preset=preset, rank=4)
    train_a_few_steps(model)
    model.eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        merged = model.merged()
        merged.eval()
        got = merged(x)
    assert not any(".lora_" in n for n, _ in merged.named_parameters())
    assert isinstance(merged.backbone.blocks[0].attn.qkv, nn.Linear)
    assert any(".lora_" in n for n, _ in model.named_parameters())  # the original keeps its adapters
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- errors


class NoFusedQKV(nn.Module):
    def __init__(self):
        super().__init__()
        block = nn.ModuleDict({"q_proj": nn.Linear(8, 8), "mlp": nn.ModuleDict({"fc1": nn.Linear(8, 8)})})
        self.blocks = nn.ModuleList([block])


@pytest.mark.parametrize("preset, missing", [("med-peft", "attn.qkv"), ("broad", "attn.qkv, attn.proj, mlp.fc2")])
def test_a_preset_naming_absent_modules_is_a_one_line_error(preset, missing):
    with pytest.raises(GreenfmError) as err:
        add_lora(NoFusedQKV(), preset, rank=2)
    message = str(err.value)
    assert "\n" not in message and missing in message and preset in message


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="med-peft, broad"):
        add_lora(tiny_vit(), "everything", rank=2)


def test_qv_layer_refuses_a_linear_that_is_not_a_fused_qkv():
    with pytest.raises(GreenfmError, match="out = 3 x in"):
        FusedQVLoraLinear(nn.Linear(8, 16), "default", config=LoraConfig(r=2))
