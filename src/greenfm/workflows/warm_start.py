"""A supervised warm start: the stand-in for a general-domain starting model when none can be downloaded.

Token reconstruction needs a *pretrained* starting model: its frozen copy is the
teacher, and a random teacher makes the objective degenerate (METHODS 2.5). A real
user passes ``--init`` a DINOv2 checkpoint. Offline, the demo instead trains a ViT
with labels on a *separate* population imaged with different acquisition settings
(another phantom site), then adapts it to the target site without labels.

``SupervisedWarmStart`` is an engine method: the encoder's pooled embedding (the same
pooling ``embed`` uses) feeds a linear head trained with binary cross-entropy on the
known labels only (-1 / unknown ignored). Only the encoder is exported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from greenfm.adapt.objective import masked_bce_with_logits, valid_label_mask
from greenfm.data.contract import Contract
from greenfm.models.backbones import Encoder
from greenfm.models.export import export_encoder


class SupervisedWarmStart(nn.Module):
    """Encoder + linear head on its pooled embedding, trained with masked multi-label BCE."""

    name = "supervised-warm-start"

    def __init__(self, encoder: Encoder, num_findings: int, *, pool: str | None = None):
        super().__init__()
        self.encoder = encoder
        self.pool = encoder.resolve_pool(pool)
        self.head = nn.Linear(encoder.embed_dim, num_findings)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder.embed(images, self.pool))

    def training_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        labels = batch["labels"]
        loss = masked_bce_with_logits(self(batch["image"]).float(), labels.float())
        return {"loss": loss, "labelled": valid_label_mask(labels).float().mean().detach()}

    def export_model(self) -> nn.Module:
        return self.encoder.model


def export_warm_start(
    method: SupervisedWarmStart, out_dir: str | Path, *, contract: Contract, description: str, record: dict[str, Any]
) -> Path:
    """Write the encoder as a greenfm export (``config.json`` + ``model.safetensors``) loadable by ``--init``."""
    metadata = {"method": method.name, "description": description, **record}
    return export_encoder(method.encoder, out_dir, preprocessing=contract, metadata=metadata)
