"""3D ResNet-18 stems (METHODS 3.6): parameter counts and layer4 shapes."""

from __future__ import annotations

import pytest
import torch

from greenfm.models import create_encoder

CASES = [
    ("r3d_18", (1, 96, 192, 192), (512, 6, 12, 12)),
    ("r3d_18_lite", (1, 96, 192, 192), (512, 3, 6, 6)),
    ("r3d_18", (1, 144, 224, 224), (512, 9, 14, 14)),
    ("r3d_18_lite", (1, 144, 224, 224), (512, 5, 7, 7)),
]


@pytest.mark.parametrize("name, params", [("r3d_18", 33_138_560), ("r3d_18_lite", 33_142_144)])
def test_params_without_fc(name, params):
    encoder = create_encoder(name)
    assert sum(p.numel() for p in encoder.parameters()) == params
    stem = encoder.model.stem[0]
    k = 2 if name == "r3d_18" else 4
    assert (stem.in_channels, stem.kernel_size, stem.stride, stem.padding, stem.bias) == (1, (k,) * 3, (k,) * 3, (0,) * 3, None)
    assert isinstance(encoder.model.fc, torch.nn.Identity) and encoder.embed_dim == 512


@pytest.mark.parametrize("name, volume, layer4", CASES)
def test_layer4_shapes(name, volume, layer4):
    # shapes only: the meta device propagates them without computing a 3D conv on the CPU
    encoder = create_encoder(name).eval().to("meta")
    features = encoder.forward_features(torch.empty((1, *volume), device="meta"))
    assert tuple(features.shape[1:]) == layer4
    assert tuple(encoder.embed(torch.empty((2, *volume), device="meta")).shape) == (2, 512)


def test_embed_equals_torchvision_forward_on_a_small_volume():
    encoder = create_encoder("r3d_18_lite").eval()
    x = torch.randn(2, 1, 16, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(encoder.embed(x), encoder.model(x))
