"""Token reconstruction (RETFound-Green, METHODS.md section 2).

A ViT student is trained to reproduce, from a noised and partly masked image,
the clean final-normed tokens of a frozen copy of its own initial weights:

    y  = teacher.forward_features(x)                       # clean target, no grad
    xn = x + noise_std * x.std((2, 3)) * randn             # last sample stays clean
    t  = where(mask, mask_token, student.patch_embed(xn))  # r_b ~ U(0, mask_max)
    h  = student.norm(student.blocks(student.norm_pre(student._pos_embed(t))))
    h  = h + gamma * projector(h)
    loss = mean((h - y) ** 2)                              # all B x N x D values

The teacher is never updated (not an EMA). Only the student is exported.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from greenfm.config import GreenfmConfig, build_config
from greenfm.errors import ConfigError
from greenfm.models.backbones import Encoder
from greenfm.models.export import export_encoder

logger = logging.getLogger(__name__)

# The paper's student: DINOv2 ViT-S/14 with registers at 392 px (789 tokens).
RECOMMENDED_ENCODER: dict[str, Any] = {
    "name": "vit_small_patch14_reg4_dinov2",
    "img_size": 392,
    "weights": "hf-hub:timm/vit_small_patch14_reg4_dinov2.lvd142m",
}

_VIT_PARTS = ("patch_embed", "_pos_embed", "patch_drop", "norm_pre", "blocks", "norm")


class TokenReconstructionConfig(GreenfmConfig):
    """Objective knobs; the defaults are the official RETFound-Green values."""

    noise_std: float = Field(0.2, ge=0, description="Gaussian noise std as a multiple of each image channel's std.")
    mask_max: float = Field(
        1 / 3, ge=0, le=1, description="Per-sample mask ratio r ~ U(0, mask_max); each patch is masked with prob. r."
    )
    clean_last: bool = Field(True, description="Keep the last sample of every batch free of noise and masking.")
    learn_mask_token: bool = Field(
        False, description="Train the mask token; the official code never does, so it stays zero."
    )
    projector: bool = Field(
        True, description="Add the residual projector h + gamma * MLP(h) on the student's tokens (training only)."
    )
    layerscale_init: float = Field(1e-5, ge=0, description="Initial value of the projector's per-channel gamma.")


def default_train_config(*, reproduce_official: bool = False) -> dict[str, Any]:
    """Recommended optimisation (METHODS 2.3), keyed like the engine's ``TrainConfig``.

    AdamW lr 5e-5, betas (0.9, 0.99), wd 1e-4 (1-D tensors excluded), grad-norm clip
    0.1, timm cosine per epoch (t_initial 100, 10 warm-up epochs inside it, from and
    down to 5e-9), bf16 autocast on CUDA. The official run trains 120 epochs against
    the 100-epoch cosine, so its last 20 sit at 5e-9 and learn nothing; greenfm stops
    at 100 unless ``reproduce_official``.
    """
    return {
        "epochs": 120 if reproduce_official else 100,
        "batch_size": 128,
        "drop_last": False,
        "lr": 5e-5,
        "betas": (0.9, 0.99),
        "weight_decay": 1e-4,
        "grad_clip": 0.1,
        "schedule": "cosine",
        "schedule_interval": "epoch",
        "t_initial": 100,
        "warmup": 10,
        "warmup_lr_init": 5e-9,
        "min_lr": 5e-9,
        "precision": "auto",  # bf16-mixed on CUDA, fp32 on CPU
        "checkpoint_every_epochs": 5,
    }


class TokenReconstruction(nn.Module):
    """Self-distillation of a ViT towards its frozen initialisation under noise and masking."""

    name = "token-reconstruction"
    Config = TokenReconstructionConfig
    default_train_config = staticmethod(default_train_config)

    def __init__(self, encoder: Encoder, config: TokenReconstructionConfig | dict[str, Any] | None = None):
        super().__init__()
        if not isinstance(config, TokenReconstructionConfig):
            config = build_config(TokenReconstructionConfig, **(config or {}))
        self.config = config
        student = encoder.model
        missing = [part for part in _VIT_PARTS if not hasattr(student, part)]
        if encoder.family != "tokens" or missing:
            raise ConfigError(
                f"token-reconstruction needs a timm VisionTransformer; '{encoder.spec.get('name')}' lacks {missing or 'tokens'}"
            )
        self.encoder = encoder  # encoder.model is the student
        self.teacher = copy.deepcopy(student).eval().requires_grad_(False)

        width = encoder.embed_dim
        mask_token = torch.zeros(1, 1, width)
        if config.learn_mask_token:
            self.mask_token = nn.Parameter(mask_token)
        else:
            self.register_buffer("mask_token", mask_token)  # fixed zero: never given to the optimiser
        if config.projector:
            self.projector = nn.Sequential(
                nn.LayerNorm(width), nn.Linear(width, width), nn.GELU(), nn.Linear(width, width)
            )
            self.gamma = nn.Parameter(torch.full((width,), float(config.layerscale_init)))
        else:
            self.projector, self.gamma = None, None

        # Recorded for the run card: a random init makes the target a random network's features.
        self.flags: dict[str, Any] = {"init_weights": encoder.weights_source, "no_pretrained_init": False}
        self.warnings: list[str] = []
        if not encoder.has_pretrained_source:
            self.flags["no_pretrained_init"] = True
            message = (
                "token-reconstruction: the encoder's initial weights have no recorded pretrained source "
                f"({encoder.weights_source.get('kind')}); the frozen teacher is then a random network and "
                "the objective is degenerate (fine for tests, not for a real model)"
            )
            self.warnings.append(message)
            logger.warning(message)

    @property
    def student(self) -> nn.Module:
        return self.encoder.model

    def train(self, mode: bool = True) -> TokenReconstruction:
        super().train(mode)
        self.teacher.eval()  # the frozen target never runs in training mode
        return self

    # --- corruption -------------------------------------------------------------------------

    def corrupt_images(self, x: torch.Tensor) -> torch.Tensor:
        """Add per-image, per-channel scaled Gaussian noise; the last sample stays clean."""
        if self.config.noise_std == 0:
            return x
        noisy = x + self.config.noise_std * x.std(dim=(2, 3), keepdim=True) * torch.randn_like(x)
        if self.config.clean_last:
            noisy[-1] = x[-1]
        return noisy

    def sample_mask(self, shape: tuple[int, ...], device: torch.device | str = "cpu") -> torch.Tensor:
        """Boolean patch mask of ``shape`` (B, ...): per sample r ~ U(0, mask_max), then Bernoulli(r)."""
        batch = shape[0]
        ratio = torch.rand(batch, device=device) * self.config.mask_max
        mask = torch.rand(shape, device=device) < ratio.view(batch, *([1] * (len(shape) - 1)))
        if self.config.clean_last:
            mask[-1] = False
        return mask

    # --- forward ----------------------------------------------------------------------------

    def student_tokens(self, x: torch.Tensor, *, mask: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The student's final-normed tokens, patches masked before position embedding; and the mask.

        Mirrors timm's ``VisionTransformer.forward_features`` with the mask inserted
        between ``patch_embed`` and ``_pos_embed``, so masked slots keep their
        position embedding and CLS/register tokens are never masked.
        """
        from timm.models import checkpoint_seq

        student = self.student
        tokens = student.patch_embed(x)  # (B, N, D), or (B, H, W, D) with dynamic_img_size
        patch_mask = None
        if mask and self.config.mask_max > 0:
            patch_mask = self.sample_mask(tokens.shape[:-1], device=tokens.device)
            tokens = torch.where(patch_mask.unsqueeze(-1), self.mask_token.to(tokens.dtype), tokens)
        tokens = student.norm_pre(student.patch_drop(student._pos_embed(tokens)))
        if getattr(student, "grad_checkpointing", False) and torch.is_grad_enabled():
            tokens = checkpoint_seq(student.blocks, tokens)
        else:
            tokens = student.blocks(tokens)
        return student.norm(tokens), patch_mask

    def project(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.projector is None:
            return tokens
        return tokens + self.gamma * self.projector(tokens)

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = batch["image"]
        with torch.no_grad():
            target = self.teacher.forward_features(x)
        tokens, mask = self.student_tokens(self.corrupt_images(x))
        prediction = self.project(tokens)
        loss = F.mse_loss(prediction.float(), target.float())
        masked = mask.float().mean() if mask is not None else torch.zeros((), device=x.device)
        return {"loss": loss, "masked_fraction": masked.detach()}

    # --- optimisation and export ------------------------------------------------------------

    def optimizer_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """Decay on every trainable tensor of 2+ dims (pos_embed, cls/reg tokens included); 1-D skip it."""
        decay, no_decay = [], []
        for param in self.parameters():
            if param.requires_grad:
                (decay if param.ndim >= 2 else no_decay).append(param)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    def export_model(self) -> nn.Module:
        """The plain timm student (projector, gamma and mask token are training-only)."""
        return self.student

    def export(
        self, out_dir: str | Path, *, preprocessing: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None
    ) -> Path:
        """Write ``out_dir/model.safetensors`` + ``config.json`` loadable by plain timm."""
        info = {"method": self.name, "method_config": self.config.to_dict(), **(metadata or {})}
        return export_encoder(self.encoder, out_dir, preprocessing=preprocessing, metadata=info)
