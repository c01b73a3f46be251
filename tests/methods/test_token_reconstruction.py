"""Token reconstruction (METHODS 2): corruption, frozen teacher, projector, loss, optimiser groups, export."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from greenfm.errors import ConfigError
from greenfm.models import create_encoder
from greenfm.models.export import load_exported_encoder
from greenfm.methods.token_reconstruction import TokenReconstruction, TokenReconstructionConfig, default_train_config


def tiny(**config) -> TokenReconstruction:
    return TokenReconstruction(create_encoder("vit_tiny_test"), config)


def smooth_images(n: int, size: int = 32, seed: int = 1) -> torch.Tensor:
    """Normalised (0.5/0.5) images with some spatial structure."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    return (torch.nn.functional.interpolate(low, size=size, mode="bilinear") - 0.5) / 0.5


def test_loss_is_exactly_zero_without_corruption_and_positive_with_it():
    x = smooth_images(4)
    # gamma = 0 switches the projector off, so any loss comes from noise / masking only
    assert tiny(noise_std=0.0, mask_max=0.0, layerscale_init=0.0).training_step({"image": x})["loss"].item() == 0.0
    torch.manual_seed(0)
    assert tiny(noise_std=0.2, mask_max=0.0, layerscale_init=0.0).training_step({"image": x})["loss"].item() > 0
    torch.manual_seed(0)
    assert tiny(noise_std=0.0, mask_max=1 / 3, layerscale_init=0.0).training_step({"image": x})["loss"].item() > 0
    # at the default gamma = 1e-5 the projector barely moves the output
    assert tiny(noise_std=0.0, mask_max=0.0).training_step({"image": x})["loss"].item() < 1e-8


def test_expected_masked_fraction_is_one_sixth():
    method = tiny(clean_last=False)
    torch.manual_seed(0)
    fraction = method.sample_mask((20_000, 64)).float().mean().item()
    assert abs(fraction - 1 / 6) < 0.005
    per_sample = method.sample_mask((20_000, 784)).float().mean(dim=1)
    assert per_sample.max().item() < 1 / 3 + 0.05  # each r_b ~ U(0, 1/3)


def test_last_sample_clean_and_unmasked():
    method = tiny()
    x = smooth_images(4)
    noisy = method.corrupt_images(x)
    assert torch.equal(noisy[-1], x[-1])
    assert (noisy[:-1] != x[:-1]).float().mean() > 0.99
    # noise std is 0.2 of each image channel's own std
    ratio = (noisy[:-1] - x[:-1]).std(dim=(2, 3)) / x[:-1].std(dim=(2, 3))
    assert ratio.mean().item() == pytest.approx(0.2, rel=0.05)
    torch.manual_seed(0)
    mask = method.sample_mask((64, 16))
    assert not mask[-1].any() and mask[:-1].any()


def test_masked_tokens_are_zero_before_position_embedding():
    method = tiny(noise_std=0.0)
    x = smooth_images(2)
    # zero patch embeddings through the model equal the student's path with every patch masked
    method.config.mask_max = 1.0
    method.sample_mask = lambda shape, device="cpu": torch.ones(shape, dtype=torch.bool)  # type: ignore[method-assign]
    tokens, mask = method.student_tokens(x)
    student = method.student
    zeros = torch.zeros(2, 16, 64)
    expected = student.norm(student.blocks(student.norm_pre(student._pos_embed(zeros))))
    torch.testing.assert_close(tokens, expected)
    assert mask.all() and method.mask_token.abs().sum() == 0 and not method.mask_token.requires_grad


def test_projector_sizes_match_methods_numbers():
    method = TokenReconstruction(create_encoder("vit_small_patch14_reg4_dinov2", img_size=392))
    projector = sum(p.numel() for p in method.projector.parameters()) + method.gamma.numel()
    assert projector == 296_832
    trainable = sum(p.numel() for p in method.parameters() if p.requires_grad)
    assert trainable == 22_129_536
    assert torch.equal(method.gamma, torch.full((384,), 1e-5))


def test_optimizer_groups_decay_pos_embed_and_tokens_but_not_1d():
    method = tiny()
    decay_group, no_decay_group = method.optimizer_groups(1e-4)
    assert decay_group["weight_decay"] == 1e-4 and no_decay_group["weight_decay"] == 0.0
    decay = {id(p) for p in decay_group["params"]}
    no_decay = {id(p) for p in no_decay_group["params"]}
    student = method.student
    for param in (student.pos_embed, student.cls_token, student.reg_token, student.patch_embed.proj.weight):
        assert id(param) in decay
    for param in (method.gamma, student.norm.weight, student.blocks[0].ls1.gamma, student.blocks[0].attn.qkv.bias):
        assert id(param) in no_decay
    teacher = {id(p) for p in method.teacher.parameters()}
    assert not teacher & (decay | no_decay) and id(method.mask_token) not in decay | no_decay


def test_teacher_is_frozen_in_eval_and_never_changes():
    torch.manual_seed(0)
    method = tiny()
    before = {k: v.clone() for k, v in method.teacher.state_dict().items()}
    method.train()
    assert method.training and method.student.training and not method.teacher.training
    optimizer = torch.optim.AdamW(method.optimizer_groups(1e-4), lr=1e-3)
    for _ in range(3):
        loss = method.training_step({"image": smooth_images(4)})["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(p.grad is None and not p.requires_grad for p in method.teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in method.teacher.state_dict().items())
    assert not torch.equal(method.student.pos_embed, method.teacher.pos_embed)  # the student did move


def test_loss_falls_over_a_short_run():
    torch.manual_seed(0)
    method = tiny()
    x = smooth_images(8)

    def held_out_loss() -> float:  # the same corruption draws every time
        with torch.random.fork_rng(), torch.no_grad():
            torch.manual_seed(123)
            return sum(method.training_step({"image": x})["loss"].item() for _ in range(4)) / 4

    start = held_out_loss()
    optimizer = torch.optim.AdamW(method.optimizer_groups(1e-4), lr=1e-3, betas=(0.9, 0.99))
    for _ in range(60):
        loss = method.training_step({"image": x})["loss"]
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(method.parameters(), 0.1)
        optimizer.step()
    assert held_out_loss() < 0.85 * start


def test_random_init_is_warned_and_flagged(caplog, tmp_path):
    with caplog.at_level(logging.WARNING):
        method = tiny()
    assert method.flags["no_pretrained_init"] and "no recorded pretrained source" in caplog.text
    path = tmp_path / "init.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in method.student.state_dict().items()}, str(path))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        pretrained = TokenReconstruction(create_encoder("vit_tiny_test", weights=path))
    assert not pretrained.flags["no_pretrained_init"] and pretrained.warnings == [] and caplog.text == ""
    assert pretrained.flags["init_weights"]["kind"] == "file"


def test_config_is_validated_and_needs_a_vit():
    with pytest.raises(ConfigError, match="mask_max"):
        tiny(mask_max=2.0)
    with pytest.raises(ConfigError, match="nois_std"):
        tiny(nois_std=0.1)
    with pytest.raises(ConfigError, match="VisionTransformer"):
        TokenReconstruction(create_encoder("resnet18"))
    assert TokenReconstructionConfig().model_dump() == {
        "noise_std": 0.2, "mask_max": 1 / 3, "clean_last": True, "learn_mask_token": False,
        "projector": True, "layerscale_init": 1e-5, "clean_scope": "global-batch", "reproduce_official": False,
    }


def test_learnable_mask_token_is_trained_and_decayed():
    method = tiny(learn_mask_token=True)
    assert isinstance(method.mask_token, torch.nn.Parameter)
    assert id(method.mask_token) in {id(p) for p in method.optimizer_groups(0.1)[0]["params"]}


def test_default_schedule_reproduces_the_methods_learning_rates():
    from greenfm.engine.optim import apply_schedule, build_scheduler
    from greenfm.engine.train_config import TrainConfig

    assert default_train_config(reproduce_official=True)["epochs"] == 120
    config = TrainConfig(**default_train_config())
    assert config.epochs == 100 and config.grad_clip == 0.1 and config.betas == (0.9, 0.99)
    assert (config.lr, config.weight_decay, config.batch_size) == (5e-5, 1e-4, 128)
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)
    scheduler = build_scheduler(optimizer, config, total_steps=120 * 586)
    expected = {0: 5e-9, 1: 5.00e-6, 5: 2.50e-5, 9: 4.50e-5, 10: 4.878e-5, 25: 4.268e-5, 50: 2.50e-5,
                75: 7.33e-6, 99: 1.73e-8, 100: 5e-9, 119: 5e-9}  # METHODS 9
    for epoch, lr in expected.items():
        apply_schedule(scheduler, config, step=epoch * 586, epoch=epoch)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(lr, rel=5e-3), epoch


NO_GREENFM_LOADER = """
import json, sys, torch, timm
from safetensors.torch import load_file
folder = sys.argv[1]
cfg = json.load(open(f"{folder}/config.json"))["model"]
model = timm.create_model(cfg["name"], pretrained=False, **cfg["kwargs"]).eval()
model.load_state_dict(load_file(f"{folder}/model.safetensors"), strict=True)
x = torch.load(f"{folder}/../x.pt")
with torch.no_grad():
    torch.save(model.forward_features(x), f"{folder}/../y.pt")
assert not any(name.startswith("greenfm") for name in sys.modules)
"""


def test_export_reloads_in_plain_timm_without_greenfm(tmp_path):
    torch.manual_seed(0)
    method = tiny()
    optimizer = torch.optim.AdamW(method.optimizer_groups(1e-4), lr=1e-3)
    for _ in range(2):
        loss = method.training_step({"image": smooth_images(4)})["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert method.export_model() is method.student
    folder = method.export(tmp_path / "exported")
    state = load_file(str(folder / "model.safetensors"))
    assert not any(k.startswith(("projector", "gamma", "mask_token", "teacher")) for k in state)
    config = json.loads((folder / "config.json").read_text())
    assert config["preprocessing"]["size"] == [32, 32] and config["preprocessing"]["mean"] == [0.5] * 3
    assert config["metadata"]["method"] == "token-reconstruction"

    x = smooth_images(3)
    torch.save(x, tmp_path / "x.pt")
    subprocess.run([sys.executable, "-c", NO_GREENFM_LOADER, str(folder)], check=True)
    method.eval()
    with torch.no_grad():
        expected = method.student.forward_features(x)
        assert torch.equal(torch.load(tmp_path / "y.pt"), expected)
        assert torch.equal(load_exported_encoder(folder).forward_features(x), expected)
