"""UniCL / CLIP recipes: the loss (against CLIP's InfoNCE and open_clip's ClipLoss), the pairs a
batch is made of, training on tiny towers, and the export that zero-shot and retrieval load."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from greenfm.labeling.label_text import NO_FINDING, per_finding_label_text, text_id, whole_label_text
from greenfm.methods.contrastive_loss import soft_targets, unicl_loss
from greenfm.methods.registry import get_method
from greenfm.models.backbones import create_encoder
from greenfm.models.text_tiny import tiny_text_tower

FINDINGS = ["cardiomegaly", "pleural_effusion", "pneumothorax"]
REPORTS = [
    "The heart is enlarged. No pleural effusion.",
    "Small left pleural effusion. No pneumothorax.",
    "Large right pneumothorax with a visible pleural line.",
    "Heart size is normal. The lungs are clear.",
]


def _features(b=6, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (F.normalize(torch.randn(b, d, generator=g), dim=-1), F.normalize(torch.randn(b, d, generator=g), dim=-1))


def test_unique_targets_give_clip_infonce():
    u, v = _features()
    scale = torch.tensor(math.log(1 / 0.07))
    logits = scale.exp() * u @ v.t()
    labels = torch.arange(6)
    expected = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
    assert torch.allclose(unicl_loss(u, v, None, scale), expected, atol=1e-7)
    assert torch.allclose(unicl_loss(u, v, torch.arange(6) * 7, scale), expected, atol=1e-7)
    # the soft-target branch on unique ids computes the same number
    targets = soft_targets(torch.arange(6))
    manual = -(targets * F.log_softmax(logits, 1)).sum(1).mean()
    assert torch.allclose(manual, F.cross_entropy(logits, labels), atol=1e-6)


def test_loss_equals_open_clip_clip_loss_when_installed():
    open_clip_loss = pytest.importorskip("open_clip.loss")
    u, v = _features(b=16, d=32, seed=3)
    scale = torch.tensor(math.log(1 / 0.07))
    theirs = open_clip_loss.ClipLoss()(u, v, scale.exp())
    assert abs(float(unicl_loss(u, v, None, scale)) - float(theirs)) < 1e-6


def test_shared_labels_are_positives_of_one_another():
    ids = torch.tensor([1, 2, 1, 3])
    targets = soft_targets(ids)
    assert torch.allclose(targets[0], torch.tensor([0.5, 0, 0.5, 0]))
    assert torch.allclose(targets.sum(1), torch.ones(4))
    # two rows with the same label: pulling row 0 towards text 2 lowers the UniCL loss, not the CLIP loss
    u, v = _features(b=4, d=8, seed=1)
    v_shared = v.clone()
    v_shared[2] = u[0]
    scale = torch.tensor(2.0)
    assert unicl_loss(u, v_shared, ids, scale) < unicl_loss(u, v, ids, scale)


def test_label_texts():
    assert whole_label_text([1, 0, 1], FINDINGS) == "Findings: cardiomegaly, pneumothorax."
    assert whole_label_text([0, 0, -1], FINDINGS) == NO_FINDING
    assert whole_label_text([np.nan, -1, np.nan], FINDINGS) is None
    rng = np.random.default_rng(0)
    texts = {per_finding_label_text([1, 0, -1], FINDINGS, rng) for _ in range(50)}
    assert texts == {"There is cardiomegaly.", "There is no pleural effusion."}
    assert text_id("No finding.") == text_id("No finding.") != text_id("Findings: cardiomegaly.")


def _recipe(name, **options):
    torch.manual_seed(0)
    image = create_encoder("vit_tiny_test", img_size=32)
    text = tiny_text_tower(REPORTS * 4, max_length=24)
    return get_method(name).from_towers({"image": image, "text": text}, {"embed_dim": 16, **options},
                                        findings=FINDINGS)  # fmt: skip


def _samples(n=8, labels=None):
    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(n):
        codes = labels[i] if labels is not None else [float(i % 2), 0.0, float(i % 3 == 0)]
        rows.append({"image": torch.randn(3, 32, 32, generator=g), "report": REPORTS[i % 4], "index": i,
                     "labels": torch.tensor(codes, dtype=torch.float32)})  # fmt: skip
    return rows


def test_pairs_follow_p_label_text_and_cap_no_finding():
    recipe = _recipe("unicl", p_label_text=0.0)
    texts, ids, from_labels = recipe.pair_texts(_samples())
    assert texts == [REPORTS[i % 4] for i in range(8)] and from_labels == 0 and len(set(ids.tolist())) == 8

    recipe = _recipe("unicl", p_label_text=1.0, max_no_finding_frac=1.0)
    texts, ids, from_labels = recipe.pair_texts(_samples())
    assert from_labels == 8 and all(t.startswith("Findings") or t == NO_FINDING for t in texts)
    same = [i for i, t in enumerate(texts) if t == texts[0]]
    assert len(same) > 1 and len(set(ids[same].tolist())) == 1

    all_normal = [[0.0, 0.0, 0.0]] * 8
    recipe = _recipe("unicl", p_label_text=1.0, max_no_finding_frac=0.25)
    texts, _, from_labels = recipe.pair_texts(_samples(labels=all_normal))
    assert texts.count(NO_FINDING) == 2 and from_labels == 2  # the rest keep their report


def test_clip_pairs_reports_only_and_needs_no_labels():
    recipe = _recipe("clip")
    assert recipe.batch_keys == ("image", "report") and not recipe.needs_labels
    samples = [{k: v for k, v in s.items() if k != "labels"} for s in _samples()]
    batch = recipe.collate(samples)
    assert batch["input_ids"].shape[0] == 8 and len(set(batch["target_ids"].tolist())) == 8


def test_training_lowers_the_loss_and_the_export_reproduces_the_latents(tmp_path):
    from greenfm.engine import TrainConfig, fit
    from greenfm.models.export import export_towers
    from greenfm.models.image_text import ImageTextModel

    recipe = _recipe("unicl")
    samples = _samples(16)
    config = TrainConfig(epochs=15, batch_size=16, lr=3e-3, weight_decay=0.0, num_workers=0, accelerator="cpu",
                         track_energy=False, progress_bar=False, log_every_steps=1, checkpoint_every_epochs=None)
    result = fit(recipe, samples, config, tmp_path / "run", export=False)
    losses = [row["loss"] for row in result.history]
    assert losses[-1] < losses[0] * 0.8
    assert result.compute["samples_trained"] == result.compute["samples_seen"] == 16 * 15

    export_towers(recipe.export_towers(), tmp_path / "export", heads=recipe.export_heads(), metadata={"flags": recipe.flags})
    model = ImageTextModel.from_export(tmp_path / "export")
    recipe.eval()
    images = torch.stack([s["image"] for s in samples[:4]])
    with torch.no_grad():
        expected_image = recipe.encode_image(images)
        tokens = recipe.text.tokenize(REPORTS)
        expected_text = recipe.encode_text(tokens["input_ids"], tokens["attention_mask"])
    torch.testing.assert_close(model.encode_images(images), expected_image, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.encode_texts(REPORTS), expected_text, atol=1e-5, rtol=1e-5)
    assert model.logit_scale == pytest.approx(float(recipe.logit_scale.detach().exp()), rel=1e-6)


def test_a_locked_text_tower_stays_fixed_and_encodes_each_text_once(tmp_path):
    from greenfm.engine import TrainConfig, fit

    recipe = _recipe("unicl", lock_text=True)
    before = {k: v.clone() for k, v in recipe.text.state_dict().items()}
    calls = []
    encode = recipe.text.encode
    recipe.text.encode = lambda texts, **kw: calls.append(len(texts)) or encode(texts, **kw)
    config = TrainConfig(epochs=3, batch_size=8, lr=1e-2, weight_decay=0.0, num_workers=0, accelerator="cpu",
                         track_energy=False, progress_bar=False, checkpoint_every_epochs=None)
    fit(recipe, _samples(16), config, tmp_path / "run", export=False)
    for key, value in recipe.text.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert sum(calls) == len(recipe._text_cache) <= 4 + 16  # reports + label texts, each once
    assert not recipe.text.training
