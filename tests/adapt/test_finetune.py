"""Fine-tuning: masked losses, balanced sampling, best-epoch selection and a single test evaluation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import timm
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from greenfm.adapt.classifier import ClassifierConfig, build_classifier
from greenfm.adapt.finetune import BestEpochTracker, evaluate_split, finetune
from greenfm.adapt.objective import ClassifierMethod, class_indices, positive_weights
from greenfm.adapt.sampling import balanced_sample_weights, balanced_sampler
from greenfm.errors import BadInputError
from greenfm.labeling.policies import policy_masked_bce


def tiny_vit() -> torch.nn.Module:
    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2
    )


class Findings(Dataset):
    """Two position-free findings: bright image, and textured (checkerboard) image; some labels unknown/uncertain."""

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, 2, (n, 2), generator=g).float()
        checker = (torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2 * 2.0 - 1.0
        noise = 0.3 * torch.randn(n, 3, 32, 32, generator=g)
        self.images = noise + self.labels[:, 0, None, None, None] + 0.8 * self.labels[:, 1, None, None, None] * checker
        self.labels[::7, 0] = float("nan")
        self.labels[3::11, 1] = -1.0
        self.reads = 0

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        self.reads += 1
        return {"image": self.images[i], "labels": self.labels[i], "index": i}


def plain_fit(
    method, train_dataset, config, run_dir, *, evaluate=None, select_metric=None, select_mode="max", sampler=None, **_
):
    """Stand-in for the engine's ``fit``: AdamW honouring ``lr_scale``, evaluate after every epoch."""
    groups = method.optimizer_groups(config["weight_decay"])
    for group in groups:
        group["lr"] = config["lr"] * group.get("lr_scale", 1.0)
    opt = torch.optim.AdamW(groups)
    loader = DataLoader(train_dataset, batch_size=16, shuffle=sampler is None, sampler=sampler)
    losses = []
    for _ in range(config["epochs"]):
        method.train()
        for batch in loader:
            loss = method.training_step(batch)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        if evaluate is not None:
            assert select_metric in evaluate(method) and select_mode == "max"
    return losses


# ----------------------------------------------------------------------------- losses


def test_masked_bce_ignores_unknown_and_uncertain_labels():
    logits = torch.randn(4, 3, requires_grad=True)
    labels = torch.tensor([[1, 0, float("nan")], [-1, 1, 0], [0, 0, 1], [float("nan"), -1, 1]])
    loss = policy_masked_bce(logits, labels)
    valid = torch.isfinite(labels) & (labels >= 0)
    expected = F.binary_cross_entropy_with_logits(logits[valid], labels[valid])
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert torch.all(logits.grad[~valid] == 0) and torch.all(logits.grad[valid] != 0)


def test_a_batch_without_valid_labels_has_zero_loss_and_a_graph():
    logits = torch.randn(2, 2, requires_grad=True)
    loss = policy_masked_bce(logits, torch.full((2, 2), float("nan")))
    assert loss.item() == 0.0
    loss.backward()


def test_pos_weight_up_weights_positives():
    labels = np.array([[1, 0], [0, 0], [0, 1], [0, -1], [float("nan"), 1]])
    np.testing.assert_allclose(positive_weights(labels), [3.0, 1.0])
    logits = torch.zeros(1, 2)
    target = torch.tensor([[1.0, 1.0]])
    weighted = policy_masked_bce(logits, target, pos_weight=torch.tensor([3.0, 1.0]))
    torch.testing.assert_close(weighted, 2 * policy_masked_bce(logits, target))


def test_the_classifier_loss_applies_its_label_policy():
    logits = torch.tensor([[3.0, -2.0]])
    labels = torch.tensor([[-1.0, float("nan")]])
    assert ClassifierMethod(torch.nn.Identity()).loss(logits, labels).item() == 0.0  # default: both masked
    official = ClassifierMethod(torch.nn.Identity(), policy="official")
    assert official.policy.name == "official"
    torch.testing.assert_close(official.loss(logits, labels), F.binary_cross_entropy_with_logits(logits, torch.zeros(1, 2)))
    with pytest.raises(BadInputError, match="multi-label"):
        ClassifierMethod(torch.nn.Identity(), task="multiclass", policy="u-ones")


def test_multiclass_targets_from_one_hot_rows_and_integers():
    one_hot = torch.tensor([[0, 1, 0], [1, 0, 0], [0, 0, 0], [float("nan"), 1, 0], [0, 1, 1]])
    assert class_indices(one_hot).tolist() == [1, 0, -100, -100, -100]
    assert class_indices(torch.tensor([2.0, float("nan"), -1.0, 0.0])).tolist() == [2, -100, -100, 0]
    method = ClassifierMethod(torch.nn.Identity(), task="multiclass")
    logits = torch.randn(5, 3)
    torch.testing.assert_close(method.loss(logits, one_hot), F.cross_entropy(logits[:2], torch.tensor([1, 0])))


# ----------------------------------------------------------------------------- balanced sampling


def test_balanced_weights_give_every_label_combination_the_same_mass():
    nan = float("nan")
    labels = np.array([[0, 0]] * 6 + [[1, 0]] * 3 + [[1, 1]] + [[nan, 0]] * 2 + [[-1, 0]] * 4)
    weights = balanced_sample_weights(labels)
    keys = [str(row) for row in labels]
    mass = {k: weights[[i for i, kk in enumerate(keys) if kk == k]].sum() for k in set(keys)}
    assert len(mass) == 5 and np.allclose(list(mass.values()), 1.0)
    drawn = np.array(list(balanced_sampler(labels, num_samples=20_000, seed=1)))
    assert (drawn == 9).mean() == pytest.approx(0.2, abs=0.02)  # the single [1, 1] row, 1 of 5 combos


# ----------------------------------------------------------------------------- training and selection


def test_lora_classifier_learns_the_synthetic_findings():
    torch.manual_seed(0)
    train, val = Findings(96, seed=1), Findings(64, seed=2)
    model = build_classifier(tiny_vit(), num_classes=2, mode="lora", rank=4, layer_decay=1.0)
    method = ClassifierMethod(model)
    losses = plain_fit(method, train, {"lr": 3e-3, "weight_decay": 0.0, "epochs": 8}, None)
    assert np.mean(losses[-6:]) < 0.8 * np.mean(losses[:6])
    metrics = evaluate_split(method, val, names=["bright", "textured"])
    assert metrics.n_evaluable == 2 and metrics.macro_auroc > 0.75


def test_finetune_selects_the_best_validation_epoch_and_tests_once(tmp_path, capsys):
    torch.manual_seed(0)
    train, val, test = Findings(96, seed=1), Findings(48, seed=2), Findings(40, seed=3)

    def fit_then_break(method, train_dataset, config, run_dir, *, evaluate, select_metric, select_mode, sampler, **_):
        # a good epoch 0, then a ruined head in epoch 1: selection must bring epoch 0 back
        plain_fit(
            method, train_dataset, config, run_dir, evaluate=evaluate, select_metric=select_metric, sampler=sampler
        )
        with torch.no_grad():
            method.model.head.fc.weight.mul_(-1.0)
        evaluate(method)

    result = finetune(
        tiny_vit(),
        train,
        val,
        test,
        classifier=ClassifierConfig(num_classes=2, mode="full", layer_decay=0.65),
        train_config={"lr": 1e-3, "weight_decay": 0.05, "epochs": 4},
        run_dir=tmp_path / "run",
        pos_weight="balanced",
        balanced=True,
        fit=fit_then_break,
    )
    history = [row["val_macro_auroc"] for row in result.history]
    assert len(history) == 5 and result.best_epoch == int(np.argmax(history)) < 4
    assert history[-1] < 0.5 < result.best_val_macro_auroc
    assert test.reads == len(test)  # the test split is read exactly once
    assert result.test["macro_auroc"] > 0.7  # scored with the restored best epoch, not the ruined last one
    assert result.parameters["trainable"] == result.parameters["total"]
    assert (tmp_path / "run" / "exported" / "best.safetensors").is_file()
    saved = json.loads((tmp_path / "run" / "finetune.json").read_text())
    assert saved["best_epoch"] == result.best_epoch and saved["classifier"]["mode"] == "full"
    out = capsys.readouterr().out
    assert "trainable parameters:" in out and "(100.000%)" in out


def test_tracker_restores_only_trainable_weights_of_the_best_epoch():
    torch.manual_seed(0)
    method = ClassifierMethod(build_classifier(tiny_vit(), num_classes=2, mode="lora", rank=2))
    tracker = BestEpochTracker(method, Findings(32, seed=4))
    tracker()
    assert set(tracker.best_state) == {n for n, p in method.named_parameters() if p.requires_grad}
    best = {n: v.clone() for n, v in tracker.best_state.items()}
    with torch.no_grad():
        for p in method.parameters():
            if p.requires_grad:
                p.add_(1.0)
    tracker.restore_best()
    params = dict(method.named_parameters())
    assert all(torch.equal(params[n], v) for n, v in best.items())


def test_export_merges_lora(tmp_path):
    method = ClassifierMethod(build_classifier(tiny_vit(), num_classes=2, mode="lora", rank=2))
    exported = method.export_model()
    assert not any(".lora_" in n for n, _ in exported.named_parameters())
    assert any(".lora_" in n for n, _ in method.named_parameters())


def test_finetune_with_the_engine_exports_the_selected_merged_model(tmp_path, capsys):
    from safetensors.torch import load_file

    from greenfm.engine import TrainConfig

    torch.manual_seed(0)
    train, val, test = Findings(64, seed=1), Findings(32, seed=2), Findings(32, seed=3)
    config = TrainConfig(
        epochs=2, batch_size=16, lr=3e-3, warmup=1, accelerator="cpu", precision="32", num_workers=0,
        track_energy=False, progress_bar=False,
    )  # fmt: skip
    result = finetune(
        tiny_vit(),
        train,
        val,
        test,
        classifier=ClassifierConfig(num_classes=2, mode="lora", rank=2),
        train_config=config,
        run_dir=tmp_path / "run",
        balanced=True,
        eval_batch_size=32,
        bootstrap=50,
    )
    assert result.best_epoch in (0, 1) and len(result.history) == 2
    assert result.best_val_macro_auroc == max(row["val_macro_auroc"] for row in result.history)
    assert result.test is not None and result.test["n_evaluable"] == 2
    low, high = result.test["macro_auroc_ci"]  # the test split scored once, with its patient-bootstrap CI
    assert low <= result.test["macro_auroc"] <= high and result.test["bootstrap"]["n_resamples"] == 50
    predictions = pd.read_parquet(tmp_path / "run" / "predictions.parquet")
    assert predictions.groupby("split").size().to_dict() == {"test": 2 * len(test), "val": 2 * len(val)}
    weights = load_file(tmp_path / "run" / "exported" / "best.safetensors")
    assert "backbone.blocks.0.attn.qkv.weight" in weights and not any("lora_" in k for k in weights)
    assert "lora med-peft r=2 (qv-fused-custom-layer)" in capsys.readouterr().out
