"""The three-plane MRI encoder (METHODS 3.6, "MRI"): parameters, shapes, spec, export, weights."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from greenfm.errors import GreenfmError
from greenfm.models import create_encoder, export_encoder, load_exported_encoder
from greenfm.models.backbones import build_model, encoder_spec, same_architecture
from greenfm.models.mri import PLANES, ThreePlaneR3D

# METHODS 3.6: r3d_18 without fc is 33,138,560 with a Conv3d(1, 64, 2, 2) stem (512 weights); the MRI
# stem Conv3d(3, 64, (1, 2, 2)) has 768, and there are three towers.
TOWER_PARAMS = 33_138_560 - 64 * 1 * 8 + 64 * 3 * 4


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return create_encoder("r3d_18_mri").eval()


def test_three_towers_with_anisotropic_stems_and_their_parameter_count(encoder):
    assert isinstance(encoder.model, ThreePlaneR3D) and tuple(encoder.model.keys()) == PLANES
    assert sum(p.numel() for p in encoder.parameters()) == 3 * TOWER_PARAMS == 99_416_448
    for plane in PLANES:
        tower = encoder.model[plane]
        stem = tower.stem[0]
        assert (stem.in_channels, stem.out_channels, stem.kernel_size, stem.stride, stem.padding, stem.bias) == (
            3, 64, (1, 2, 2), (1, 2, 2), (0, 0, 0), None)
        assert isinstance(tower.fc, nn.Identity)
    assert encoder.embed_dim == 512 and encoder.family == "map3d"
    assert encoder.model["sag"].stem[0].weight.data_ptr() != encoder.model["cor"].stem[0].weight.data_ptr()


def test_output_shapes_at_the_methods_crop():
    # shapes only: the meta device builds and propagates them without computing on the CPU
    with torch.device("meta"):
        encoder = create_encoder("r3d_18_mri").eval()
    x = torch.empty((2, 3, 3, 20, 192, 192), device="meta")
    assert tuple(encoder.forward_features(x).shape) == (2, 512, 3, 3, 12, 12)  # (B, C, planes, D', H', W')
    assert tuple(encoder.embed(x).shape) == (2, 512)
    assert tuple(encoder(x).shape) == (2, 512)


def test_embedding_is_the_mean_of_the_plane_features(encoder):
    x = torch.randn(2, 3, 3, 4, 16, 16)
    x[:, 1] = 0  # a zero plane still contributes its (constant) feature to the mean, as in the official code
    with torch.no_grad():
        per_plane = torch.stack([encoder.model[p](x[:, i]) for i, p in enumerate(PLANES)])
        torch.testing.assert_close(encoder(x), per_plane.mean(0))
        torch.testing.assert_close(encoder.embed(x), encoder.model(x))
        assert not torch.allclose(encoder(x), per_plane[0])


def test_checkpointed_stages_give_the_same_features(encoder):
    x = torch.randn(1, 3, 3, 2, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(encoder.model.forward_features(x, checkpoint_stages=True), encoder.forward_features(x))


def test_the_spec_rebuilds_the_model_without_greenfm(encoder):
    from torchvision.models.video import r3d_18

    spec = encoder.spec
    assert spec == encoder_spec("r3d_18_mri") and spec["planes"] == list(PLANES) and spec["sequences"] == ["pd", "t1", "t2"]
    towers = nn.ModuleDict()
    with torch.device("meta"):  # skip the random init: every tensor is loaded below
        for plane in spec["planes"]:  # what the module docstring tells a user to do, from the JSON alone
            m = r3d_18()
            args = dict(spec["replace"]["stem.0"]["args"])
            m.stem[0] = nn.Conv3d(**{**args, "kernel_size": tuple(args["kernel_size"]), "stride": tuple(args["stride"])})
            m.fc = nn.Identity()
            towers[plane] = m
    towers.load_state_dict(encoder.model.state_dict(), strict=True, assign=True)
    towers.eval()
    x = torch.randn(1, 3, 3, 2, 8, 8)
    with torch.no_grad():
        plain = torch.stack([towers[p](x[:, i]) for i, p in enumerate(spec["planes"])]).mean(0)
        torch.testing.assert_close(plain, encoder(x))
    assert isinstance(build_model(spec), ThreePlaneR3D)
    assert same_architecture(spec, encoder_spec("r3d_18_mri")) and not same_architecture(spec, encoder_spec("r3d_18"))


def test_export_and_load_like_any_encoder(encoder, tmp_path):
    export_encoder(encoder, tmp_path / "exported")
    loaded = load_exported_encoder(tmp_path / "exported")
    assert isinstance(loaded.model, ThreePlaneR3D) and loaded.spec == encoder.spec
    x = torch.randn(1, 3, 3, 2, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval().embed(x), encoder.embed(x))


def test_a_one_tower_r3d_file_initialises_every_plane(encoder, tmp_path):
    # a torchvision r3d_18 state dict (e.g. a CT stage-1 tower), here its last block only
    part = {k: torch.randn_like(v.float()).to(v.dtype) for k, v in encoder.model["sag"].state_dict().items()
            if k.startswith("layer4.1.")}
    save_file(part, str(tmp_path / "tower.safetensors"))
    loaded = create_encoder("r3d_18_mri", weights=tmp_path / "tower.safetensors")
    for plane in PLANES:
        state = loaded.model[plane].state_dict()
        for key, value in part.items():
            torch.testing.assert_close(state[key], value)
    encoder = loaded
    assert encoder.weights_source["kind"] == "file"
    assert any(m.startswith("sag.stem.0") for m in encoder.load_report.missing)


def test_wrong_layouts_and_options_are_one_line_errors(encoder):
    with pytest.raises(GreenfmError, match=r"takes \(B, 3 planes, sequences, D, H, W\); got shape \(1, 3, 4, 8, 8\)"):
        encoder(torch.randn(1, 3, 4, 8, 8))
    with pytest.raises(GreenfmError, match="takes only in_chans and stem_kernel/stem_stride, got \\['img_size'\\]"):
        create_encoder("r3d_18_mri", img_size=192)


def test_the_mri_align_stage_defaults_are_a_valid_train_config():
    from greenfm.engine.train_config import TrainConfig
    from greenfm.models.mri import MRI_ALIGN_TRAIN

    config = TrainConfig(**MRI_ALIGN_TRAIN)
    assert (config.batch_size, config.schedule, config.schedule_interval, config.lr, config.grad_clip) == (
        8, "cosine", "step", 1e-5, 0.5)
