"""Tiny image-text towers and samples for curated-recipe tests (vit_tiny_test at 32 px, a word-level text tower)."""

from __future__ import annotations

import torch

from greenfm.engine import TrainConfig
from greenfm.methods.registry import get_method
from greenfm.models.backbones import create_encoder
from greenfm.models.text_tiny import tiny_text_tower

FINDINGS = ["cardiomegaly", "pleural_effusion", "pneumothorax"]
REPORTS = ["The heart is enlarged.", "Small left pleural effusion.", "Large right pneumothorax.", "The lungs are clear.",
           "Mild cardiomegaly with effusion.", "No acute findings."]  # fmt: skip


def recipe(name: str = "chexficient", *, dropout: bool = True, **options):
    """A tiny recipe; ``dropout=False`` zeroes the text tower's dropout (its draws differ per process)."""
    torch.manual_seed(0)
    image = create_encoder("vit_tiny_test", img_size=32)
    text = tiny_text_tower(REPORTS * 4, max_length=16)
    options = {"embed_dim": 16, "warmup_samples": 48, **options}
    if name == "curated-unicl":
        options.setdefault("p_label_text", 0.5)
    built = get_method(name).from_towers({"image": image, "text": text}, options, findings=FINDINGS)
    if not dropout:
        for module in built.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    return built


def samples(n: int = 96):
    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(n):
        group = i % 6 if i % 10 else 0  # a common and rarer groups: images and reports carry the group
        image = torch.randn(3, 32, 32, generator=g) * 0.5 + group
        rows.append({"image": image, "report": REPORTS[group], "index": i,
                     "labels": torch.tensor([float(group == 0), float(group == 1), float(group == 2)])})  # fmt: skip
    return rows


def config(**overrides) -> TrainConfig:
    base = dict(epochs=3, batch_size=24, lr=1e-3, min_lr=1e-4, weight_decay=0.0, num_workers=0, accelerator="cpu",
                precision="32", track_energy=False, progress_bar=False, log_every_steps=1, show_ledger=False,
                checkpoint_every_epochs=None, schedule_interval="step", threads=1)  # fmt: skip
    return TrainConfig(**{**base, **overrides})
