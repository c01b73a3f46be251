"""GreenRFM's MUST supervision (recipe ``greenrfm``; METHODS 3.3-3.6), one stage per run.

- stage ``image``: ``BCE(Linear(d_v, K)(f_v(x)), y)`` on the pooled image feature;
- stage ``text``: ``BCE(Linear(d_t, K)(f_t(r)_CLS), y)`` on the text tower's [CLS];
- stage ``align``: both stage-1 towers (heads dropped), bias-free ``P_v`` (d_v -> 768) and
  ``P_t`` (d_t -> 768), one classifier ``C = Linear(768, K)`` shared by both latents, and

      S = Z_v Z_t^T   (raw dot products, temperature 1)
      L = 1/2 [CE(S, I) + CE(S^T, I)] + 1/2 [BCE(C z_v, y) + BCE(C z_t, y)]

  with the BCE masked per the label policy (METHODS 3.3; default ``mask``). The contrastive
  term spans the global batch (latents gathered over devices); the BCE is per sample.

Any image tower with ``embed`` / ``embed_dim`` works: timm 2D backbones, the 3D ResNets
(``r3d_18`` k2s2, ``r3d_18_lite`` k4s4) and other volume encoders. Which runs feed the
align stage is the workflow's business (``greenfm.workflows.pretrain``); this module owns
the losses, the heads, the per-stage optimisation of METHODS 3.4 and what each stage exports.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torch.utils.checkpoint import checkpoint
from torch.utils.data import default_collate

from greenfm.errors import ConfigError
from greenfm.labeling.policies import apply_policy, label_policy, masked_bce_with_logits
from greenfm.methods.base import Recipe, RecipeConfig


STAGES = ("image", "text", "align")
STAGE_TOWERS: dict[str, tuple[str, ...]] = {"image": ("image",), "text": ("text",), "align": ("image", "text")}
STAGE_BATCH_KEYS: dict[str, tuple[str, ...]] = {
    "image": ("image", "labels"), "text": ("report", "labels"), "align": ("image", "report", "labels"),
}  # fmt: skip
LATENT_DIM = 768  # METHODS 3.5: P_v d_v -> 768, P_t 768 -> 768


class GreenRFMConfig(RecipeConfig):
    label_policy: str = Field("mask", description="What uncertain (-1) and unknown labels become: a preset "
                              "(default = mask, official, u-ones, u-zeros, u-soft) or 'uncertain=<p>,missing=<p>'.")
    latent_dim: int = Field(LATENT_DIM, ge=1, description="Width of the shared latent space (GreenRFM: 768).")
    image_pool: str | None = Field(None, description="Pooling of the image tower (default: the encoder's own).")
    text_pool: str | None = Field("cls", description="Pooling of the text tower (GreenRFM: [CLS]); None keeps the tower's.")
    init_from_stage1: bool = Field(
        True, description="Align stage: start from the stage-1 image and text runs (strict). False reproduces the "
        "official release, which starts from the unsupervised towers (with a warning).",
    )
    checkpoint_activations: bool = Field(
        False, description="Recompute image-tower activations in backward (less memory, about one more forward).",
    )


class GreenRFM(Recipe):
    """One GreenRFM stage: supervised image or text tower, or the aligned pair with a shared classifier."""

    name = "greenrfm"
    Config = GreenRFMConfig
    towers = {"image": "image", "text": "text"}
    batch_keys = STAGE_BATCH_KEYS["align"]
    per_sample_loss = False
    stages = STAGES
    needs_labels = True

    def __init__(self, stage: str, findings: list[str], config: GreenRFMConfig | Mapping[str, Any] | None = None, *,
                 image: nn.Module | None = None, text: nn.Module | None = None):  # fmt: skip
        super().__init__(config)
        if stage not in STAGES:
            raise ConfigError(f"recipe 'greenrfm' has stages {', '.join(STAGES)}, not {stage!r}")
        if not findings:
            raise ConfigError("recipe 'greenrfm' needs finding columns (structured labels) in the manifest")
        self.stage, self.findings = stage, list(findings)
        self.batch_keys = STAGE_BATCH_KEYS[stage]
        self.per_sample_loss = stage != "align"
        self.policy = label_policy(self.config.label_policy)
        k = len(self.findings)
        self._spare_image: list[nn.Module] = []  # the text stage's untrained image tower: exported, never trained
        if stage in ("image", "align"):
            self.image = _need(image, "image", stage)
            self.pool = image.resolve_pool(self.config.image_pool) if hasattr(image, "resolve_pool") else None
            if self.config.checkpoint_activations and hasattr(getattr(image, "model", None), "set_grad_checkpointing"):
                image.model.set_grad_checkpointing(True)  # timm's own
        elif image is not None:
            self._spare_image = [image]
        if stage in ("text", "align"):
            self.text = _need(text, "text", stage)
            if self.config.text_pool is not None:
                self.text.pool = self.config.text_pool
        if stage == "image":
            self.head = nn.Linear(self.image.embed_dim, k)
        elif stage == "text":
            self.head = nn.Linear(self.text.embed_dim, k)
        else:
            self.image_projection = nn.Linear(self.image.embed_dim, self.config.latent_dim, bias=False)
            self.text_projection = nn.Linear(self.text.embed_dim, self.config.latent_dim, bias=False)
            self.classifier = nn.Linear(self.config.latent_dim, k)
        self.flags = {
            "stage": stage, "findings": self.findings, "label_policy": self.policy.to_dict(),
            "image_pool": getattr(self, "pool", None), "text_pool": self.config.text_pool,
            "text_tower": getattr(text, "spec", {}) if text is not None else {},
            "init_from_stage1": self.config.init_from_stage1 if stage == "align" else None,
            "checkpoint_activations": self.config.checkpoint_activations,
            "normalize_latents": False, "temperature": 1.0,
        }  # fmt: skip

    @classmethod
    def stage_towers(cls, stage: str) -> tuple[str, ...]:
        return STAGE_TOWERS[_check_stage(stage)]

    @classmethod
    def stage_batch_keys(cls, stage: str) -> tuple[str, ...]:
        return STAGE_BATCH_KEYS[_check_stage(stage)]

    @classmethod
    def from_towers(cls, towers: Mapping[str, nn.Module], config: Any = None, **context: Any) -> GreenRFM:
        stage = _check_stage(context.get("stage") or "align")
        missing = [n for n in STAGE_TOWERS[stage] if n not in towers]
        if missing:
            raise ConfigError(f"recipe 'greenrfm' stage {stage} needs tower(s) {missing}; got {sorted(towers)}")
        return cls(stage, list(context.get("findings") or []), config, image=towers.get("image"), text=towers.get("text"))

    @classmethod
    def default_train_config(cls, stage: str | None = None, image_spec: Mapping[str, Any] | None = None,
                             **_: Any) -> dict[str, Any]:  # fmt: skip
        """METHODS 3.4. Stage 1: AdamW lr 1e-4, wd 1e-4, cosine per step to 1e-6, batch 10, 5 epochs, no
        clipping, no warm-up. Align (CT): lr 1e-5, wd 0, constant, batch 10, 5 epochs, grad-norm clip 0.5;
        align with the three-plane MRI encoder (``image_spec``): cosine per step and batch 8."""
        if stage == "align" and image_spec is not None:
            from greenfm.models.mri import MRI_ALIGN_TRAIN, is_three_plane_spec

            if is_three_plane_spec(dict(image_spec)):
                return dict(MRI_ALIGN_TRAIN)
        if stage == "align":
            return {"epochs": 5, "batch_size": 10, "lr": 1e-5, "min_lr": 0.0, "weight_decay": 0.0, "schedule": "constant",
                    "schedule_interval": "step", "warmup": 0, "grad_clip": 0.5, "precision": "32"}  # fmt: skip
        return {"epochs": 5, "batch_size": 10, "lr": 1e-4, "min_lr": 1e-6, "weight_decay": 1e-4, "schedule": "cosine",
                "schedule_interval": "step", "warmup": 0, "grad_clip": None, "precision": "32"}  # fmt: skip

    # --- batch ---------------------------------------------------------------------------

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        missing = [k for k in self.batch_keys if k not in samples[0]]
        if missing:
            raise ConfigError(f"recipe 'greenrfm' stage {self.stage} needs batch key(s) {missing}; "
                              f"the dataset gives {sorted(samples[0])}")  # fmt: skip
        tensors = [k for k in ("image", "labels", "index") if k in self.batch_keys or k == "index"]
        batch = default_collate([{k: s[k] for k in tensors if k in s} for s in samples])
        if "report" in self.batch_keys:
            tokens = self.text.tokenize([s["report"] for s in samples])
            batch.update(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                         truncated=tokens["truncated"].float())  # fmt: skip
        return batch

    # --- features ------------------------------------------------------------------------

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled image feature f_v(x); with ``checkpoint_activations`` a 3D ResNet recomputes its stages in backward."""
        image = self.image
        if self.config.checkpoint_activations and self.training and getattr(image, "family", None) == "map3d":
            model = image.model
            if hasattr(model, "stem"):  # one torchvision VideoResNet
                x = images
                for part in (model.stem, model.layer1, model.layer2, model.layer3, model.layer4):
                    x = checkpoint(part, x, use_reentrant=False)
                return image.pool(x, self.pool)
            if "checkpoint_stages" in inspect.signature(model.forward_features).parameters:  # the three-plane MRI encoder
                return image.pool(model.forward_features(images, checkpoint_stages=True), self.pool)
        if hasattr(image, "embed"):
            return image.embed(images, self.pool) if self.pool is not None else image.embed(images)
        return image(images)

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.text(input_ids, attention_mask)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """z_v = P_v f_v(x), unnormalised (align stage)."""
        return self.image_projection(self.image_features(images))

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """z_t = P_t f_t(r)_CLS, unnormalised (align stage)."""
        return self.text_projection(self.text_features(input_ids, attention_mask))

    # --- loss ----------------------------------------------------------------------------

    def _bce(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        targets, valid = apply_policy(labels, self.policy)
        return masked_bce_with_logits(logits.float(), targets, valid)

    def training_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        labels = batch["labels"]
        if self.stage == "image":
            loss = self._bce(self.head(self.image_features(batch["image"])), labels)
            return {"loss": loss, "labelled": _labelled(labels, self.policy)}
        if self.stage == "text":
            loss = self._bce(self.head(self.text_features(batch["input_ids"], batch["attention_mask"])), labels)
            return {"loss": loss, "labelled": _labelled(labels, self.policy),
                    "truncated_fraction": batch["truncated"].mean()}  # fmt: skip
        z_v = self.encode_image(batch["image"]).float()
        z_t = self.encode_text(batch["input_ids"], batch["attention_mask"]).float()
        contrastive = alignment_contrastive_loss(self.context.all_gather(z_v), self.context.all_gather(z_t))
        supervised = 0.5 * (self._bce(self.classifier(z_v), labels) + self._bce(self.classifier(z_t), labels))
        return {"loss": contrastive + supervised, "contrastive": contrastive.detach(), "bce": supervised.detach(),
                "labelled": _labelled(labels, self.policy), "truncated_fraction": batch["truncated"].mean()}  # fmt: skip

    # --- curation hook (greenfm.methods.curated: curated-greenrfm) -----------------------

    @property
    def latent_width(self) -> int:
        return self.config.latent_dim

    def joint_latents(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The align stage's per-row latents: L2-normalised for prototype selection, raw for the loss."""
        if self.stage != "align":
            raise ConfigError(f"only the align stage of greenrfm can be curated, not stage {self.stage}")
        z_v = self.encode_image(batch["image"]).float()
        z_t = self.encode_text(batch["input_ids"], batch["attention_mask"]).float()
        return {"image": F.normalize(z_v, dim=-1), "text": F.normalize(z_t, dim=-1), "z_v": z_v, "z_t": z_t,
                "labels": batch["labels"]}  # fmt: skip

    def loss_from_latents(self, latents: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """METHODS 3.5's loss over the (gathered, kept) rows: contrastive at temperature 1 plus both BCE terms."""
        z_v, z_t, labels = latents["z_v"], latents["z_t"], latents["labels"]
        contrastive = alignment_contrastive_loss(z_v, z_t)
        supervised = 0.5 * (self._bce(self.classifier(z_v), labels) + self._bce(self.classifier(z_t), labels))
        return {"loss": contrastive + supervised, "contrastive": contrastive.detach(), "bce": supervised.detach()}

    # --- export --------------------------------------------------------------------------

    def export_towers(self) -> dict[str, nn.Module]:
        if self.stage == "image":
            return {"image": self.image}
        if self.stage == "text":
            if not self._spare_image:
                raise ConfigError("the greenrfm text stage exports beside an image tower; none was given")
            return {"image": self._spare_image[0], "text": self.text}
        return {"image": self.image, "text": self.text}

    def export_heads(self) -> dict[str, torch.Tensor]:
        head = self.head if self.stage != "align" else self.classifier
        heads = {"classifier_weight": head.weight.detach(), "classifier_bias": head.bias.detach()}
        if self.stage == "align":
            heads.update(image_projection=self.image_projection.weight.detach(),
                         text_projection=self.text_projection.weight.detach())  # fmt: skip
        return heads

    def export_model(self) -> nn.Module:
        image = self._spare_image[0] if self.stage == "text" else self.image
        return getattr(image, "model", image)


def alignment_contrastive_loss(z_v: torch.Tensor, z_t: torch.Tensor) -> torch.Tensor:
    """1/2 [CE(S, I) + CE(S^T, I)] with S = Z_v Z_t^T: raw dot products at temperature 1 (METHODS 3.5)."""
    similarity = z_v @ z_t.t()
    targets = torch.arange(len(z_v), device=z_v.device)
    return 0.5 * (F.cross_entropy(similarity, targets) + F.cross_entropy(similarity.t(), targets))


def _labelled(labels: torch.Tensor, policy: Any) -> torch.Tensor:
    return apply_policy(labels, policy)[1].float().mean().detach()


def _check_stage(stage: str) -> str:
    if stage not in STAGES:
        raise ConfigError(f"recipe 'greenrfm' has stages {', '.join(STAGES)} (and 'all'), not {stage!r}")
    return stage


def _need(tower: nn.Module | None, name: str, stage: str) -> nn.Module:
    if tower is None:
        raise ConfigError(f"recipe 'greenrfm' stage {stage} needs a{'n' if name == 'image' else ''} {name} tower")
    return tower
