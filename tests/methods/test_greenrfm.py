"""The greenrfm recipe (METHODS 3.3-3.6, 3.9): head and projection sizes, the align loss against a
hand computation, label policies in every BCE, per-stage optimisation, and the 3D path with
activation checkpointing on synthetic volumes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from greenfm.errors import ConfigError
from greenfm.methods.greenrfm import GreenRFM, alignment_contrastive_loss
from greenfm.methods.registry import get_method
from greenfm.models.backbones import create_encoder
from greenfm.models.text_tiny import tiny_text_tower

REPORTS = ["There is cardiomegaly.", "No pleural effusion.", "Small lung nodule.", "The lungs are clear."]
FINDINGS = ["cardiomegaly", "pleural_effusion", "lung_nodule"]


class _Tower(nn.Module):
    """A stand-in tower of a given width (for parameter counts only)."""

    def __init__(self, width: int):
        super().__init__()
        self.embed_dim = width


def test_projections_and_shared_classifier_match_methods_3_9():
    recipe = GreenRFM("align", [f"f{i}" for i in range(18)], image=_Tower(512), text=_Tower(768))
    projections = recipe.image_projection.weight.numel() + recipe.text_projection.weight.numel()
    assert projections == 983_040
    assert recipe.image_projection.bias is None and recipe.text_projection.bias is None
    assert sum(p.numel() for p in recipe.classifier.parameters()) == 13_842
    assert get_method("greenrfm") is GreenRFM


def test_stage_defaults_follow_methods_3_4():
    stage1 = GreenRFM.default_train_config(stage="image")
    assert stage1 == GreenRFM.default_train_config(stage="text")
    assert (stage1["lr"], stage1["weight_decay"], stage1["min_lr"], stage1["schedule"], stage1["schedule_interval"],
            stage1["batch_size"], stage1["epochs"], stage1["grad_clip"], stage1["warmup"]) == (
        1e-4, 1e-4, 1e-6, "cosine", "step", 10, 5, None, 0)  # fmt: skip
    align = GreenRFM.default_train_config(stage="align")
    assert (align["lr"], align["weight_decay"], align["schedule"], align["batch_size"], align["epochs"],
            align["grad_clip"], align["warmup"]) == (1e-5, 0.0, "constant", 10, 5, 0.5, 0)  # fmt: skip


def _align(policy="mask", **config):
    torch.manual_seed(0)
    image = create_encoder("vit_tiny_test")
    text = tiny_text_tower(REPORTS, max_length=16)
    return GreenRFM("align", FINDINGS, {"label_policy": policy, **config}, image=image, text=text)


def _samples(n=4, labels=None):
    g = torch.Generator().manual_seed(1)
    labels = labels if labels is not None else torch.tensor([[1, 0, -1], [0, float("nan"), 1], [1, 1, 0], [0, 0, 0]])
    return [{"image": torch.randn(3, 32, 32, generator=g), "report": REPORTS[i], "labels": labels[i].float(), "index": i}
            for i in range(n)]  # fmt: skip


def test_align_loss_is_the_unnormalised_contrastive_plus_shared_classifier_bce():
    recipe = _align().eval()
    batch = recipe.collate(_samples())
    out = recipe.training_step(batch)
    with torch.no_grad():
        z_v = recipe.image_projection(recipe.image.embed(batch["image"]))
        z_t = recipe.text_projection(recipe.text(batch["input_ids"], batch["attention_mask"]))
        s = z_v @ z_t.T  # raw dot products, temperature 1
        eye = torch.arange(4)
        contrastive = 0.5 * (F.cross_entropy(s, eye) + F.cross_entropy(s.T, eye))
        y = batch["labels"]
        valid = (y == 0) | (y == 1)  # mask: -1 and NaN do not count
        target = torch.where(valid, y, torch.zeros_like(y))

        def bce(logits):
            raw = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
            return (raw * valid).sum() / valid.sum()

        expected = contrastive + 0.5 * (bce(recipe.classifier(z_v)) + bce(recipe.classifier(z_t)))
    assert torch.allclose(out["loss"], expected, atol=1e-5)
    assert torch.allclose(out["contrastive"], contrastive, atol=1e-5)
    # normalising the latents would change the loss: it is computed on the raw ones
    assert not torch.allclose(alignment_contrastive_loss(F.normalize(z_v, dim=-1), F.normalize(z_t, dim=-1)), contrastive)
    assert recipe.flags["normalize_latents"] is False and recipe.flags["label_policy"]["uncertain"] == "mask"


def test_uncertain_labels_are_masked_by_default_and_zeros_under_official():
    flipped = torch.tensor([[1, 0, -1], [0, float("nan"), 1], [1, 1, 0], [0, 0, 0]])
    masked = _align().eval()
    base = masked.training_step(masked.collate(_samples(labels=flipped)))["bce"]
    # the -1 and NaN entries do not count under 'mask': the loss is the same whatever they hold
    other = flipped.clone()
    other[0, 2], other[1, 1] = float("nan"), -1
    assert torch.allclose(masked.training_step(masked.collate(_samples(labels=other)))["bce"], base)
    official = _align("official").eval()
    zeros = flipped.nan_to_num(0).clamp(min=0)
    a = official.training_step(official.collate(_samples(labels=flipped)))["bce"]
    b = official.training_step(official.collate(_samples(labels=zeros)))["bce"]
    assert torch.allclose(a, b) and not torch.allclose(a, base)


def test_image_and_text_stages_train_their_own_head_only():
    torch.manual_seed(0)
    image = GreenRFM("image", FINDINGS, image=create_encoder("vit_tiny_test"))
    assert image.batch_keys == ("image", "labels") and image.per_sample_loss
    assert image.head.in_features == 64 and set(image.export_towers()) == {"image"}
    assert set(image.export_heads()) == {"classifier_weight", "classifier_bias"}
    batch = image.collate([{k: v for k, v in s.items() if k != "report"} for s in _samples()])
    image.training_step(batch)["loss"].backward()
    assert image.head.weight.grad is not None
    spare = create_encoder("vit_tiny_test")
    text = GreenRFM("text", FINDINGS, image=spare, text=tiny_text_tower(REPORTS, max_length=16, pool="mean"))
    assert text.text.pool == "cls"  # [CLS] (METHODS 3.4)
    assert all(p is not spare.model.patch_embed.proj.weight for p in text.parameters())  # never trained
    batch = text.collate([{"report": s["report"], "labels": s["labels"], "index": s["index"]} for s in _samples()])
    assert "image" not in batch
    loss = text.training_step(batch)["loss"]
    loss.backward()
    assert text.head.weight.grad is not None and set(text.export_towers()) == {"image", "text"}


def test_unknown_stage_and_missing_findings_are_config_errors():
    with pytest.raises(ConfigError, match="stages image, text, align"):
        GreenRFM("pretrain", FINDINGS, image=_Tower(8))
    with pytest.raises(ConfigError, match="finding columns"):
        GreenRFM("image", [], image=_Tower(8))
    with pytest.raises(ConfigError, match="needs tower"):
        GreenRFM.from_towers({"image": _Tower(8)}, None, findings=FINDINGS, stage="align")


@pytest.mark.parametrize("name", ["r3d_18_lite"])
def test_3d_align_step_and_activation_checkpointing_give_the_same_gradients(name):
    """Synthetic (1, D, H, W) volumes through a 3D ResNet: checkpointing recomputes, it does not change the step."""
    grads = []
    for checkpoint in (False, True):
        torch.manual_seed(0)
        recipe = GreenRFM("align", FINDINGS, {"checkpoint_activations": checkpoint},
                          image=create_encoder(name), text=tiny_text_tower(REPORTS, max_length=16))  # fmt: skip
        g = torch.Generator().manual_seed(2)
        samples = [{**s, "image": torch.randn(1, 8, 16, 16, generator=g)} for s in _samples()]
        batch = recipe.collate(samples)
        assert batch["image"].shape == (4, 1, 8, 16, 16)
        recipe.train()
        out = recipe.training_step(batch)
        out["loss"].backward()
        assert recipe.image_projection.weight.shape == (768, 512)
        grads.append((float(out["loss"].detach()), recipe.image.model.stem[0].weight.grad.clone()))
    assert grads[0][0] == pytest.approx(grads[1][0], abs=1e-5)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-4, atol=1e-6)
    assert grads[0][1].abs().sum() > 0


def test_three_plane_mri_encoder_is_an_image_tower_with_its_own_align_defaults():
    """The MRI encoder (B, 3 planes, 3 sequences, D, H, W) -> 512-d trains like any tower; its align stage
    follows METHODS 3.4's MRI line (cosine, batch 8)."""
    torch.manual_seed(0)
    image = create_encoder("r3d_18_mri")
    recipe = GreenRFM("align", FINDINGS, {"checkpoint_activations": True}, image=image,
                      text=tiny_text_tower(REPORTS, max_length=16))  # fmt: skip
    g = torch.Generator().manual_seed(3)
    samples = [{**s, "image": torch.randn(3, 3, 2, 16, 16, generator=g)} for s in _samples(2)]
    recipe.train()
    out = recipe.training_step(recipe.collate(samples))
    out["loss"].backward()
    assert recipe.image_projection.weight.shape == (768, 512)
    assert all(image.model[p].stem[0].weight.grad is not None for p in ("sag", "cor", "tra"))
    align = GreenRFM.default_train_config(stage="align", image_spec=image.spec)
    assert (align["schedule"], align["batch_size"], align["grad_clip"]) == ("cosine", 8, 0.5)
    assert GreenRFM.default_train_config(stage="align", image_spec=create_encoder("vit_tiny_test").spec)["batch_size"] == 10
