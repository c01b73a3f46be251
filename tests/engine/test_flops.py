"""FLOP counts of METHODS.md sections 8-9, counted on the meta device (no memory, no compute)."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.models.vision_transformer import VisionTransformer

from greenfm.engine.flops import count_forward_flops, count_step_flops_per_sample


def _vit(name: str, img_size: int) -> tuple[torch.nn.Module, torch.Tensor]:
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False, num_classes=0, img_size=img_size)
        return model, torch.empty(1, 3, img_size, img_size)


def _gflops(model, x, **kw) -> float:
    return count_forward_flops(model, x, **kw) / 1e9


def test_vit_small_392_with_and_without_attention_and_ratio_to_vit_large():
    small = _gflops(*_vit("vit_small_patch14_reg4_dinov2", 392))
    small_linear = _gflops(*_vit("vit_small_patch14_reg4_dinov2", 392), include_attention=False)
    large = _gflops(*_vit("vit_large_patch16_224", 224))
    assert small == pytest.approx(45.34, abs=0.005)
    assert small_linear == pytest.approx(33.86, abs=0.005)
    assert large == pytest.approx(123.11, abs=0.005)
    assert large / small == pytest.approx(2.715, abs=0.002)


def test_fused_attn_flag_is_restored():
    model, x = _vit("vit_small_patch14_reg4_dinov2", 224)
    count_forward_flops(model, x)
    assert all(m.fused_attn for m in model.modules() if hasattr(m, "fused_attn"))


def test_vit_small_and_base_at_224():
    assert _gflops(*_vit("vit_small_patch14_reg4_dinov2", 224)) == pytest.approx(12.46, abs=0.005)
    assert _gflops(*_vit("vit_base_patch16_224", 224)) == pytest.approx(35.13, abs=0.005)


def test_fused_attention_is_counted_on_real_tensors_and_state_is_kept():
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=0)
    model.train()
    x = torch.randn(1, 3, 32, 32)
    explicit = count_forward_flops(model, x)
    linear_only = count_forward_flops(model, x, include_attention=False)
    tokens, width, depth = 17, 32, 2
    assert explicit - linear_only == 4 * tokens**2 * width * depth  # QK^T and AV, 2 FLOPs per MAC
    assert model.training and all(m.fused_attn for m in model.modules() if hasattr(m, "fused_attn"))


def test_step_flops_per_sample_leaves_rng_and_buffers_alone():
    bn = torch.nn.BatchNorm1d(4)

    class Method(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bn, self.lin = bn, torch.nn.Linear(4, 3)

        def training_step(self, batch):
            x = batch["image"] + torch.randn_like(batch["image"])
            return {"loss": self.lin(self.bn(x)).sum()}

    method = Method().train()
    batch = {"image": torch.randn(5, 4), "id": list("abcde")}
    before = torch.get_rng_state()
    per_sample = count_step_flops_per_sample(method, batch)
    assert per_sample == 2 * 4 * 3
    assert torch.equal(torch.get_rng_state(), before) and bn.num_batches_tracked == 0
