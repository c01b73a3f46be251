"""Image-report-label contrastive pretraining (recipes ``unicl`` and ``clip``; METHODS 5.1-5.2).

An image tower and a text tower, each followed by a bias-free linear projection to a
shared space, L2-normalised; a learnable temperature (``logit_scale``, initialised at
ln(1/0.07) or taken from the ``--init`` run); the UniCL loss over the whole global batch
(embeddings all-gathered across devices, gradients kept for the local slice).

Each drawn (image, report, labels) row becomes one pair. With probability
``p_label_text`` the text is rendered from the labels ("Findings: a, b." or "No finding.",
or one "There is (no) {p}." per ``label_text_mode``) and rows with the same text are
positives of one another; otherwise the text is the report and the pair is its own
class. ``max_no_finding_frac`` caps the share of a batch that becomes "No finding."
label pairs (the excess keep their report). ``clip`` is ``unicl`` with every target
unique (reports only; no labels needed).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torch.utils.data import default_collate

from greenfm.errors import ConfigError
from greenfm.labeling.label_text import NO_FINDING, per_finding_label_text, text_id, whole_label_text
from greenfm.methods.base import Recipe, RecipeConfig
from greenfm.methods.contrastive_loss import unicl_loss

CLIP_LOGIT_SCALE = math.log(1 / 0.07)


class UniCLConfig(RecipeConfig):
    embed_dim: int = Field(512, ge=1, description="Width of the shared image-text space (bias-free projections).")
    image_pool: str | None = Field(None, description="Pooling of the image tower (default: the encoder's own).")
    p_label_text: float = Field(0.5, ge=0, le=1, description="Probability that a pair's text is rendered from its labels.")
    label_text_mode: Literal["whole", "per_finding"] = Field(
        "whole", description="whole: 'Findings: a, b.' / 'No finding.'; per_finding: one 'There is (no) {p}.'"
    )
    max_no_finding_frac: float = Field(
        0.25, ge=0, le=1, description="At most this share of a batch becomes 'No finding.' label pairs."
    )
    logit_scale_init: float = Field(CLIP_LOGIT_SCALE, description="Initial log inverse temperature (ln(1/0.07)).")
    learn_logit_scale: bool = Field(True, description="Train the temperature.")
    max_logit_scale: float = Field(math.log(100), description="Clamp the log inverse temperature to this after each step.")
    lock_text: bool = Field(
        False, description="Keep the text tower frozen (LiT-style): only the image tower, projections and temperature "
        "train, and each distinct text is encoded once and cached.",
    )


class UniCL(Recipe):
    """Image and text towers aligned with the UniCL loss over the global batch."""

    name = "unicl"
    Config = UniCLConfig
    towers = {"image": "image", "text": "text"}
    batch_keys = ("image", "report", "labels")
    per_sample_loss = False
    needs_labels = True

    def __init__(self, image: nn.Module, text: nn.Module, findings: list[str] | None = None,
                 config: UniCLConfig | Mapping[str, Any] | None = None):  # fmt: skip
        super().__init__(config)
        self.image, self.text = image, text
        self.findings = list(findings or [])
        self.pool = image.resolve_pool(self.config.image_pool)
        self.image_projection = nn.Linear(image.embed_dim, self.config.embed_dim, bias=False)
        self.text_projection = nn.Linear(text.embed_dim, self.config.embed_dim, bias=False)
        scale = torch.tensor(float(self.config.logit_scale_init))
        if self.config.learn_logit_scale:
            self.logit_scale = nn.Parameter(scale)
        else:
            self.register_buffer("logit_scale", scale)
        self._text_cache: dict[str, torch.Tensor] = {}
        if self.config.lock_text:
            self.text.requires_grad_(False).eval()
        if self.config.p_label_text > 0 and not self.findings:
            raise ConfigError(f"recipe '{self.name}' with p_label_text > 0 needs finding columns in the manifest")
        self.flags = {"text_tower": getattr(text, "spec", {}), "findings": self.findings, "image_pool": self.pool,
                      "normalize_latents": True}  # fmt: skip

    @classmethod
    def from_towers(cls, towers: Mapping[str, nn.Module], config: Any = None, **context: Any) -> UniCL:
        cls.check_towers(towers)
        recipe = cls(towers["image"], towers["text"], context.get("findings"), config)
        recipe.load_heads(context.get("heads") or {})
        return recipe

    @classmethod
    def default_train_config(cls, **_: Any) -> dict[str, Any]:
        """The released MI2 settings that fit greenfm's engine (METHODS 5.3): lr 1e-5, wd 0.2,
        cosine per step with 5 warm-up steps, grad-norm clip 1.0; batch 256 (MI2: 1,024)."""
        return {"epochs": 10, "batch_size": 256, "lr": 1e-5, "weight_decay": 0.2, "schedule": "cosine",
                "schedule_interval": "step", "warmup": 5, "grad_clip": 1.0, "drop_last": False}  # fmt: skip

    def load_heads(self, heads: Mapping[str, torch.Tensor]) -> None:
        """Projections and temperature of an earlier image-text run, when their shapes fit."""
        for name in ("image_projection", "text_projection"):
            weight = heads.get(name)
            if weight is not None:
                if weight.shape != getattr(self, name).weight.shape:
                    raise ConfigError(
                        f"--init run's {name} is {tuple(weight.shape)}, this run's {tuple(getattr(self, name).weight.shape)}"
                    )
                getattr(self, name).weight.data.copy_(weight)
        if "logit_scale" in heads:
            self.logit_scale.data.copy_(heads["logit_scale"].reshape(()))

    # --- batch ---------------------------------------------------------------------------

    def pair_texts(self, samples: list[dict[str, Any]]) -> tuple[list[str], torch.Tensor, int]:
        """Each sample's text and target id, and how many texts came from labels."""
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,))))  # follows torch's seeded RNG
        draws = rng.random(len(samples))
        cap = int(math.floor(self.config.max_no_finding_frac * len(samples)))
        texts, ids, from_labels, no_finding = [], [], 0, 0
        for sample, draw in zip(samples, draws):
            text = None
            if draw < self.config.p_label_text:
                codes = sample["labels"].numpy()
                if self.config.label_text_mode == "whole":
                    text = whole_label_text(codes, self.findings)
                else:
                    text = per_finding_label_text(codes, self.findings, rng)
                if text == NO_FINDING:
                    no_finding += 1
                    if no_finding > cap:
                        text = None
            if text is None:
                texts.append(sample["report"])
                ids.append(-1 - int(sample["index"]))  # unique over the whole dataset, hence over ranks
            else:
                texts.append(text)
                ids.append(text_id(text))
                from_labels += 1
        return texts, torch.tensor(ids, dtype=torch.long), from_labels

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        texts, ids, from_labels = self.pair_texts(samples)
        tokens = self.text.tokenize(texts)
        batch = default_collate([{"image": s["image"], "index": s["index"]} for s in samples])
        batch.update(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], target_ids=ids, texts=texts,
                     truncated=tokens["truncated"].float(),
                     label_texts=torch.full((len(samples),), from_labels / len(samples)))  # fmt: skip
        return batch

    # --- loss ----------------------------------------------------------------------------

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_projection(self.image.embed(images, self.pool)), dim=-1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_projection(self.text(input_ids, attention_mask)), dim=-1)

    def train(self, mode: bool = True) -> UniCL:
        super().train(mode)
        if self.config.lock_text:
            self.text.eval()  # a locked tower never runs dropout
        return self

    def locked_text_features(self, texts: list[str], device: torch.device) -> torch.Tensor:
        """Pooled text features of a locked tower, each distinct text encoded once."""
        missing = sorted({t for t in texts if t not in self._text_cache})
        if missing:
            for text, row in zip(missing, self.text.encode(missing)):
                self._text_cache[text] = row
        return torch.stack([self._text_cache[t] for t in texts]).to(device)

    def training_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        image = self.context.all_gather(self.encode_image(batch["image"]).float())
        if self.config.lock_text:
            features = self.locked_text_features(batch["texts"], batch["image"].device)
            text_latents = F.normalize(self.text_projection(features), dim=-1)
        else:
            text_latents = self.encode_text(batch["input_ids"], batch["attention_mask"])
        text = self.context.all_gather(text_latents.float())
        ids = self.context.all_gather(batch["target_ids"])
        loss = unicl_loss(image, text, ids, self.logit_scale.float())
        return {"loss": loss, "temperature": (1.0 / self.logit_scale.exp()).detach(),
                "truncated_fraction": batch["truncated"].mean(), "label_text_fraction": batch["label_texts"].mean()}  # fmt: skip

    def on_after_optimizer_step(self, step: int) -> None:
        with torch.no_grad():
            self.logit_scale.clamp_(0, self.config.max_logit_scale)

    def export_heads(self) -> dict[str, torch.Tensor]:
        return {"image_projection": self.image_projection.weight, "text_projection": self.text_projection.weight,
                "logit_scale": self.logit_scale.detach().reshape(1)}  # fmt: skip


class CLIPConfig(UniCLConfig):
    p_label_text: float = Field(0.0, ge=0, le=0, description="Always 0: CLIP pairs each image with its report only.")


class CLIP(UniCL):
    """CLIP: UniCL with every target unique (image-report pairs only)."""

    name = "clip"
    Config = CLIPConfig
    batch_keys = ("image", "report")
    needs_labels = False

    def pair_texts(self, samples: list[dict[str, Any]]) -> tuple[list[str], torch.Tensor, int]:
        ids = torch.tensor([-1 - int(s["index"]) for s in samples], dtype=torch.long)
        return [s["report"] for s in samples], ids, 0
