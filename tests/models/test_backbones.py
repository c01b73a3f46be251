"""create_encoder: names, parameter counts, token counts, pooling, grey input."""

from __future__ import annotations

import pytest
import timm
import torch

from greenfm.errors import ConfigError
from greenfm.models import TINY_CONFIGS, build_model, create_encoder


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_dinov2_reg4_at_392_matches_methods_numbers():
    # shapes and counts only: the meta device skips initialising and computing 22M parameters
    with torch.device("meta"):
        encoder = create_encoder("vit_small_patch14_reg4_dinov2", img_size=392)
        tokens = encoder.forward_features(torch.empty(1, 3, 392, 392))
    assert n_params(encoder) == 21_832_704  # METHODS 9, no head
    assert encoder.embed_dim == 384 and encoder.num_prefix_tokens == 5
    assert tokens.shape == (1, 789, 384)
    assert encoder.weights_source == {"kind": "random"} and not encoder.has_pretrained_source


def test_vit_base_patch16_has_no_head_and_197_tokens():
    with torch.device("meta"):
        encoder = create_encoder("vit_base_patch16_224")
        tokens = encoder.forward_features(torch.empty(1, 3, 224, 224))
    assert tokens.shape == (1, 197, 768)
    assert isinstance(encoder.model.head, torch.nn.Identity)


def test_tiny_config_is_a_plain_timm_model_from_its_spec():
    encoder = create_encoder("vit_tiny_test")
    spec = encoder.spec
    assert spec["library"] == "timm" and spec["name"] == TINY_CONFIGS["vit_tiny_test"]["base"]
    rebuilt = timm.create_model(spec["name"], pretrained=False, **spec["kwargs"])
    rebuilt.load_state_dict(encoder.model.state_dict(), strict=True)
    model = encoder.model
    assert (model.patch_embed.patch_size, model.embed_dim, len(model.blocks)) == ((8, 8), 64, 4)
    assert model.blocks[0].attn.num_heads == 4 and model.reg_token.shape == (1, 4, 64)
    assert model.blocks[0].ls1.gamma.shape == (64,)  # LayerScale, as DINOv2
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(encoder.forward_features(x), rebuilt.forward_features(x))


def test_pool_modes_on_tokens():
    encoder = create_encoder("vit_tiny_test").eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        tokens = encoder.forward_features(x)
        assert tokens.shape == (3, 5 + 16, 64)
        torch.testing.assert_close(encoder.embed(x), tokens.mean(1))  # default: mean of all tokens
        torch.testing.assert_close(encoder.embed(x, "all_mean"), tokens.mean(1))
        torch.testing.assert_close(encoder.embed(x, "mean-patch-tokens"), tokens[:, 5:].mean(1))
        # timm's own 'avg' token pool averages the patch tokens only
        torch.testing.assert_close(encoder.embed(x, "patch_mean"), encoder.model.pool(tokens, pool_type="avg"))
        torch.testing.assert_close(encoder.embed(x, "cls"), tokens[:, 0])
    with pytest.raises(ConfigError, match="valid"):
        encoder.embed(x, "avg")


def test_resnet_feature_map_and_grey_stem():
    encoder = create_encoder("resnet18", in_chans=1).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        fmap = encoder.forward_features(x)
        assert fmap.shape == (2, 512, 2, 2)
        torch.testing.assert_close(encoder.embed(x), encoder.model(x))  # timm's avg-pool head, num_classes=0
    assert encoder.embed_dim == 512 and encoder.default_pool == "avg"


def test_unknown_name_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown encoder 'vit_nonexistent_test'"):
        create_encoder("vit_nonexistent_test")


def test_build_model_from_spec_is_random_init():
    encoder = create_encoder("vit_tiny_test")
    rebuilt = build_model(encoder.spec)
    assert n_params(rebuilt) == n_params(encoder.model)


def test_img_size_is_ignored_by_cnns():
    encoder = create_encoder("resnet18", img_size=96)
    assert "img_size" not in encoder.spec["kwargs"] and encoder.img_size is None
