"""An image-text model for inference: two towers and their projections into a shared space.

Any image-text recipe's export (a run's ``exported/`` or a ``greenfm export`` model folder,
both with a ``text/`` tower and ``heads.safetensors``) loads into :class:`ImageTextModel`, which is what zero-shot
classification and retrieval need: ``encode_images`` and ``encode_texts`` give latents in
the shared space, L2-normalised when the recipe trained on cosine similarities
(``normalize``; GreenRFM's unnormalised latents set it False). A GreenRFM export also
carries its shared classifier ``C`` (``classify_latents``: sigmoid(C z)) and its findings.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from greenfm.errors import BadInputError
from greenfm.models.export import load_exported_heads, load_exported_towers, read_export_config


class ImageTextModel(nn.Module):
    """``encode_images(x) -> (B, D)``, ``encode_texts(texts) -> (N, D)`` in one shared space."""

    def __init__(
        self,
        image: nn.Module,
        text: nn.Module,
        *,
        image_projection: torch.Tensor | None = None,
        text_projection: torch.Tensor | None = None,
        image_projection_bias: torch.Tensor | None = None,
        text_projection_bias: torch.Tensor | None = None,
        logit_scale: float | None = None,
        normalize: bool = True,
        pool: str | None = None,
        preprocessing: dict[str, Any] | None = None,
        classifier_weight: torch.Tensor | None = None,
        classifier_bias: torch.Tensor | None = None,
        findings: Sequence[str] | None = None,
        recipe: str | None = None,
    ):
        super().__init__()
        self.image, self.text = image, text
        self.image_projection = _linear(image_projection, image_projection_bias)  # CheXficient's have a bias
        self.text_projection = _linear(text_projection, text_projection_bias)
        self.logit_scale = logit_scale
        self.normalize = normalize
        self.pool = pool
        self.preprocessing = preprocessing
        self.classifier = _linear(classifier_weight, classifier_bias)  # GreenRFM's C, shared by both latents
        self.findings = list(findings or [])  # the classifier's outputs, in order
        self.recipe = recipe

    @torch.no_grad()
    def classify_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """sigmoid(C z): the shared classifier's probabilities (N, K) from unnormalised latents (N, D)."""
        if self.classifier is None:
            raise BadInputError("this image-text model has no classifier head (readout 'classifier' needs a greenrfm model)")
        return torch.sigmoid(self.classifier(latents.to(self.classifier.weight.dtype)))

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        features = self.image.embed(images, self.pool)
        features = self.image_projection(features) if self.image_projection is not None else features
        return F.normalize(features.float(), dim=-1) if self.normalize else features.float()

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        features = self.text.encode(list(texts), batch_size=batch_size)
        if self.text_projection is not None:
            features = self.text_projection(features.to(self.text_projection.weight.device))
        return F.normalize(features.float(), dim=-1) if self.normalize else features.float()

    @classmethod
    def from_export(cls, path: str | Path) -> ImageTextModel:
        """Load the image and text towers and their projections of a run, its ``exported/`` folder
        or a ``greenfm export`` model folder (whose files' sha256 are checked as they are read;
        ``greenfm.export.load_exported(path).image_text`` also checks its reference embeddings)."""
        path = Path(path)
        folder = path / "exported" if (path / "exported" / "config.json").is_file() else path
        config = read_export_config(folder)
        if "text" not in (config.get("towers") or {}):
            raise BadInputError(
                "not an image-text model (no text tower); train one with --recipe unicl, clip or greenrfm", source=str(path)
            )
        meta = config.get("metadata") or {}
        if isinstance(meta, dict) and meta.get("recipe") == "greenrfm" and meta.get("stage") not in (None, "align"):
            raise BadInputError(f"a greenrfm --stage {meta.get('stage')} run, not an aligned image-text model; "
                                "evaluate its --stage align run", source=str(path))  # fmt: skip
        towers = load_exported_towers(folder, ["image", "text"])
        return cls.from_towers(towers["image"], towers["text"], load_exported_heads(folder), config)

    @classmethod
    def from_towers(cls, image: nn.Module, text: nn.Module, heads: dict[str, torch.Tensor],
                    config: dict[str, Any]) -> ImageTextModel:  # fmt: skip
        """Assemble loaded towers with the heads and the recipe flags an export ``config`` records."""
        meta = config.get("metadata") or {}
        method = (meta.get("flags") or {}) if isinstance(meta, dict) else {}
        scale = heads.get("logit_scale")
        model = cls(
            image, text,
            image_projection=heads.get("image_projection"), text_projection=heads.get("text_projection"),
            image_projection_bias=heads.get("image_projection_bias"), text_projection_bias=heads.get("text_projection_bias"),
            logit_scale=float(scale.exp().reshape(())) if scale is not None else None,
            normalize=bool(method.get("normalize_latents", True)),
            pool=method.get("image_pool"), preprocessing=config.get("preprocessing"),
            classifier_weight=heads.get("classifier_weight"), classifier_bias=heads.get("classifier_bias"),
            findings=method.get("findings") or meta.get("findings"), recipe=meta.get("recipe"),
        )  # fmt: skip
        return model.eval()


def _linear(weight: torch.Tensor | None, bias: torch.Tensor | None = None) -> nn.Linear | None:
    if weight is None:
        return None
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    layer.weight.data.copy_(weight)
    if bias is not None:
        layer.bias.data.copy_(bias)
    return layer
