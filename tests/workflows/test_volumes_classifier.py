"""The pooled-feature classifier that fine-tunes 3-D CNNs: heads, modes, stage-wise layer decay."""

from __future__ import annotations

import pytest
import torch

from greenfm.adapt.classifier import PooledClassifier, build_classifier
from greenfm.errors import ConfigError
from greenfm.models import create_encoder


def _r3d():
    torch.manual_seed(0)
    return create_encoder("r3d_18_lite")


def test_linear_mode_trains_only_the_head_and_keeps_batchnorm_frozen():
    model = build_classifier(_r3d(), num_classes=3, mode="linear")
    assert isinstance(model, PooledClassifier)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"head.fc_norm.weight", "head.fc_norm.bias", "head.fc.weight", "head.fc.bias"}
    model.train()
    assert not model.backbone.training and model.head.training
    x = torch.randn(2, 1, 8, 16, 16)
    before = model.backbone.stem[1].running_mean.clone()
    logits = model(x)
    assert logits.shape == (2, 3) and torch.equal(model.backbone.stem[1].running_mean, before)
    logits.sum().backward()
    assert model.head.fc.weight.grad is not None


def test_full_mode_decays_the_learning_rate_stage_by_stage():
    model = build_classifier(_r3d(), num_classes=2, mode="full", layer_decay=0.5)
    scales = {}
    for group in model.optimizer_groups(0.05):
        for name in group["param_names"]:
            scales[name] = group["lr_scale"]
    assert scales["head.fc.weight"] == 1.0
    assert scales["backbone.layer4.0.conv1.0.weight"] == 0.5
    assert scales["backbone.layer1.0.conv1.0.weight"] == 0.5**4
    assert scales["backbone.stem.0.weight"] == 0.5**5
    assert all(p.requires_grad for p in model.parameters())
    assert model(torch.randn(2, 1, 8, 16, 16)).shape == (2, 2)


def test_lora_on_a_3d_resnet_is_one_line():
    with pytest.raises(ConfigError, match="LoRA applies to ViTs; this 3-D ResNet") as err:
        build_classifier(_r3d(), num_classes=2, mode="lora")
    assert "\n" not in str(err.value)
