"""Supervised pretraining of an image encoder on structured labels (recipe ``supervised``).

The encoder's pooled embedding (the pooling ``embed`` uses) feeds a linear head trained
with binary cross-entropy on the manifest's findings, after the run's label policy
(``mask`` by default: uncertain and unknown labels do not count). It is GreenRFM's
image stage 1 (METHODS 3.4) and the demo's stand-in for a general-domain starting model
when none can be downloaded. Only the encoder is exported; the head is training-only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from pydantic import Field
from torch import nn

from greenfm.labeling.policies import apply_policy, label_policy, masked_bce_with_logits
from greenfm.methods.base import Recipe, RecipeConfig
from greenfm.models.backbones import Encoder


class SupervisedConfig(RecipeConfig):
    pool: str | None = Field(None, description="Pooling of the encoder's features (default: the encoder's own).")
    label_policy: str = Field("mask", description="What uncertain (-1) and unknown labels become: a preset "
                              "(default = mask, official, u-ones, u-zeros, u-soft) or 'uncertain=<p>,missing=<p>'.")


class Supervised(Recipe):
    """Encoder + linear head on its pooled embedding, trained with masked multi-label BCE."""

    name = "supervised"
    Config = SupervisedConfig
    towers = {"image": "image"}
    batch_keys = ("image", "labels")
    needs_labels = True

    def __init__(self, image: Encoder, num_findings: int, config: SupervisedConfig | Mapping[str, Any] | None = None):
        super().__init__(config)
        self.image = image
        self.policy = label_policy(self.config.label_policy)
        self.pool = image.resolve_pool(self.config.pool)
        self.head = nn.Linear(image.embed_dim, num_findings)
        self.flags = {"label_policy": self.policy.to_dict()}

    @classmethod
    def from_towers(cls, towers: Mapping[str, nn.Module], config: Any = None, **context: Any) -> Supervised:
        cls.check_towers(towers)
        findings = context.get("findings") or []
        if not findings:
            from greenfm.errors import ConfigError

            raise ConfigError("recipe 'supervised' needs finding columns in the manifest")
        return cls(towers["image"], len(findings), config)

    @classmethod
    def default_train_config(cls, **_: Any) -> dict[str, Any]:
        """GreenRFM stage 1 (METHODS 3.4): AdamW lr 1e-4, wd 1e-4, cosine per step to 1e-6, batch 10, 5 epochs."""
        return {"epochs": 5, "batch_size": 10, "lr": 1e-4, "min_lr": 1e-6, "weight_decay": 1e-4,
                "schedule": "cosine", "schedule_interval": "step"}  # fmt: skip

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.image.embed(images, self.pool))

    def training_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        targets, valid = apply_policy(batch["labels"], self.policy)
        loss = masked_bce_with_logits(self(batch["image"]).float(), targets, valid)
        return {"loss": loss, "labelled": valid.float().mean().detach()}
