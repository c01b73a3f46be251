"""CheXficient (METHODS 4): CLIP trained on a subset chosen by prototype curation during epoch 1.

- **Model (4.1):** image and text towers, each followed by ``Linear(width, 512)`` *with bias*,
  L2-normalised; a learnable ``logit_scale`` initialised at ln 100 (temperature 0.01) and never
  clamped; symmetric InfoNCE over the gathered global batch, restricted to the kept rows.
- **Curation (4.2-4.3):** :class:`greenfm.methods.curated.CurationMixin` with K = 6 prototypes;
  ``max_per_cluster`` defaults to ``max(1, round(0.125 B / K))`` for the global batch B, which
  is the official 10 at B = 480 and keeps the paper's ratio (~22.5%) at smaller batches.
- **Schedule (4.4):** AdamW lr 5e-5, eps 1e-8, cosine per step to 5e-6, no warm-up, wd 1e-4 on
  >= 2-D tower weights only (1-D parameters, projections and temperature: none), 20 epochs, seed 0,
  global batch 480, no clipping. ``lr_horizon='fixed'`` (default) spans the run's real length once
  the subset is known; ``'official'`` keeps the release's horizon of 20 x the current epoch length.
- **Selection (4.4):** checkpoints are never chosen on a split tagged ``test``
  (``selection_split``); ``greenfm pretrain`` keeps the last checkpoint.

The subset is written to ``subset.json`` in the run folder and stored in every checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from pydantic import Field, field_validator
from torch import nn

from greenfm.methods.curated import CurationMixin, CurationOptions, UniCLLatents
from greenfm.methods.unicl import CLIP, CLIPConfig

CHEXFICIENT_LOGIT_SCALE = math.log(100.0)


class CheXficientConfig(CLIPConfig, CurationOptions):
    embed_dim: int = Field(512, ge=1, description="Width of the shared space (Linear(width, 512) with bias per tower).")
    logit_scale_init: float = Field(CHEXFICIENT_LOGIT_SCALE, description="Initial log inverse temperature (ln 100: tau = 0.01).")
    max_logit_scale: float | None = Field(None, description="CheXficient never clamps its temperature (None).")
    projection_bias: bool = Field(True, description="Projections with bias (official).")
    selection_split: str | None = Field(
        None, description="Split on which checkpoints may be selected (a validation split); None keeps the last. "
        "A split tagged test is refused (the release selected on CheXpert test).",
    )

    @field_validator("selection_split")
    @classmethod
    def _never_test(cls, value: str | None) -> str | None:
        if value is not None and "test" in value.lower():
            raise ValueError(f"checkpoint selection on '{value}' would select on the test set; use a validation split")
        return value


class CheXficient(CurationMixin, UniCLLatents, CLIP):
    """CLIP with prototype curation in epoch 1, then the fixed subset (METHODS 4)."""

    name = "chexficient"
    Config = CheXficientConfig

    def __init__(self, image: nn.Module, text: nn.Module, findings: list[str] | None = None,
                 config: CheXficientConfig | Mapping[str, Any] | None = None):  # fmt: skip
        super().__init__(image, text, findings, config)
        if self.config.projection_bias:
            self.image_projection = nn.Linear(image.embed_dim, self.config.embed_dim, bias=True)
            self.text_projection = nn.Linear(text.embed_dim, self.config.embed_dim, bias=True)

    @classmethod
    def default_train_config(cls, **_: Any) -> dict[str, Any]:
        """METHODS 4.4: the official optimisation (global batch 480 = 6 GPUs x 80)."""
        return {"epochs": 20, "batch_size": 480, "lr": 5e-5, "min_lr": 5e-6, "eps": 1e-8, "weight_decay": 1e-4,
                "schedule": "cosine", "schedule_interval": "step", "warmup": 0, "grad_clip": None, "seed": 0,
                "drop_last": False}  # fmt: skip

    def optimizer_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """Decay on >= 2-D weights of the towers only; projections, temperature and 1-D tensors none."""
        towers = {id(p) for name in ("image", "text") for p in getattr(self, name).parameters()}
        decay, no_decay = [], []
        for param in self.parameters():
            if param.requires_grad:
                (decay if param.ndim >= 2 and id(param) in towers else no_decay).append(param)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    def on_after_optimizer_step(self, step: int) -> None:
        self.commit_curation()
        if self.config.max_logit_scale is not None:
            with torch.no_grad():
                self.logit_scale.clamp_(max=self.config.max_logit_scale)

    def load_heads(self, heads: Mapping[str, torch.Tensor]) -> None:
        super().load_heads({k: v for k, v in heads.items() if not k.endswith("_bias")})
        for name in ("image_projection", "text_projection"):
            bias = heads.get(f"{name}_bias")
            if bias is not None and getattr(self, name).bias is not None:
                getattr(self, name).bias.data.copy_(bias)

    def export_heads(self) -> dict[str, torch.Tensor]:
        heads = super().export_heads()
        for name in ("image_projection", "text_projection"):
            if getattr(self, name).bias is not None:
                heads[f"{name}_bias"] = getattr(self, name).bias
        return heads
