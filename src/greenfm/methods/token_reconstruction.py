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

Official semantics kept under the engine (METHODS 2.4): exactly one clean sample per
optimiser step, the last of the global batch (last micro-batch of the last rank), also
under DDP and gradient accumulation. ``reproduce_official`` emulates, on request only,
the official loop's clipping bug (METHODS 2.3): a stale, never-unscaled mask-token
gradient inside the clip norm (``greenfm.methods.official_clipping``).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Callable, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from greenfm.errors import ConfigError, GreenfmError
from greenfm.methods.base import Recipe, RecipeConfig
from greenfm.methods.official_clipping import OfficialClipping
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


class TokenReconstructionConfig(RecipeConfig):
    """Objective knobs; the defaults are the official RETFound-Green values."""

    noise_std: float = Field(0.2, ge=0, description="Gaussian noise std as a multiple of each image channel's std.")
    mask_max: float = Field(
        1 / 3, ge=0, le=1, description="Per-sample mask ratio r ~ U(0, mask_max); each patch is masked with prob. r."
    )
    clean_last: bool = Field(
        True, description="Keep one sample per batch free of noise and masking (the last; see clean_scope)."
    )
    clean_scope: Literal["global-batch", "micro-batch"] = Field(
        "global-batch",
        description="global-batch: one clean sample per optimiser step, the global batch's last, as in the official "
        "single-GPU run; micro-batch: the last sample of every micro-batch on every device.",
    )
    learn_mask_token: bool = Field(
        False, description="Train the mask token; the official code never does, so it stays zero."
    )
    projector: bool = Field(
        True, description="Add the residual projector h + gamma * MLP(h) on the student's tokens (training only)."
    )
    layerscale_init: float = Field(1e-5, ge=0, description="Initial value of the projector's per-channel gamma.")
    reproduce_official: bool = Field(
        False,
        description="Reproduce the official run's training dynamics: 120 epochs and its clipping bug (a stale, "
        "GradScaler-scaled mask-token gradient inside the clip norm, METHODS 2.3). Off: correct clipping.",
    )


def default_train_config(*, reproduce_official: bool = False, **_: Any) -> dict[str, Any]:
    """Recommended optimisation (METHODS 2.3), keyed like the engine's ``TrainConfig``.

    AdamW lr 5e-5, betas (0.9, 0.99), wd 1e-4 (1-D tensors excluded), grad-norm clip
    0.1, timm cosine per epoch (t_initial 100, 10 warm-up epochs inside it, from and
    down to 5e-9), bf16 autocast on CUDA. The official run trains 120 epochs against
    the 100-epoch cosine, so its last 20 sit at 5e-9 and learn nothing; greenfm stops
    at 100 unless ``reproduce_official``. Other recipe options are ignored.
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


class TokenReconstruction(Recipe):
    """Self-distillation of a ViT towards its frozen initialisation under noise and masking."""

    name = "token-reconstruction"
    Config = TokenReconstructionConfig
    towers = {"image": "image"}
    batch_keys = ("image",)
    default_train_config = staticmethod(default_train_config)

    def __init__(self, encoder: Encoder, config: TokenReconstructionConfig | dict[str, Any] | None = None):
        super().__init__(config)
        config = self.config
        student = encoder.model
        missing = [part for part in _VIT_PARTS if not hasattr(student, part)]
        if encoder.family != "tokens" or missing:
            raise ConfigError(
                f"token-reconstruction needs a timm VisionTransformer; '{encoder.spec.get('name')}' lacks {missing or 'tokens'}"
            )
        self.encoder = encoder  # encoder.model is the student
        self.teacher = copy.deepcopy(student).eval().requires_grad_(False)

        if config.reproduce_official and config.learn_mask_token:
            raise ConfigError("reproduce_official emulates a mask token outside the optimiser; drop learn_mask_token")
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

        self._clean_here = True  # this micro-batch holds the step's clean sample (set by on_micro_batch)
        self.official = OfficialClipping(self, width) if config.reproduce_official else None

        # Recorded for the run card: a random init makes the target a random network's features.
        self.flags: dict[str, Any] = {"init_weights": encoder.weights_source, "no_pretrained_init": False}
        self.warnings: list[str] = []
        if self.official is not None:
            self.flags["official_clipping_bug"] = True
            self.warnings.append(OfficialClipping.WARNING)
            logger.warning(OfficialClipping.WARNING)
        if not encoder.has_pretrained_source:
            self.flags["no_pretrained_init"] = True
            message = (
                "token-reconstruction: the encoder's initial weights have no recorded pretrained source "
                f"({encoder.weights_source.get('kind')}); the frozen teacher is then a random network and "
                "the objective is degenerate (fine for tests, not for a real model)"
            )
            self.warnings.append(message)
            logger.warning(message)

    @classmethod
    def from_towers(cls, towers: Any, config: Any = None, **context: Any) -> TokenReconstruction:
        cls.check_towers(towers)
        return cls(towers["image"], config)

    @classmethod
    def recommended_init(cls, backbone: str | None = None) -> str:
        """The paper's start, DINOv2 ViT-S/14 reg4 (LVD-142M), when the hub is reachable.

        Fetched here (then cached by huggingface_hub) so that an offline machine stops at
        once with one line saying how to pass a local file; another backbone has no
        recommended start and must be given ``--init``.
        """
        from greenfm.models.weights import download_hub_weights

        name, weights = RECOMMENDED_ENCODER["name"], RECOMMENDED_ENCODER["weights"]
        if backbone is not None and backbone != name:
            raise ConfigError(
                f"token-reconstruction recommends a start for {name} only; pass --init for --backbone {backbone} "
                "(a weights file, a hub name, 'timm' for its pretrained tag, or 'random' for tests)"
            )
        hub_id = weights.removeprefix("hf-hub:")
        try:
            download_hub_weights(hub_id)
        except GreenfmError:
            raise ConfigError(
                f"token-reconstruction starts from the paper's {weights}, which cannot be fetched here (offline or "
                f"the hub is unreachable): download model.safetensors from https://huggingface.co/{hub_id} and pass "
                "--init /path/to/model.safetensors (or --init random, a degenerate objective for tests)"
            ) from None
        return weights

    @property
    def student(self) -> nn.Module:
        return self.encoder.model

    def train(self, mode: bool = True) -> TokenReconstruction:
        super().train(mode)
        self.teacher.eval()  # the frozen target never runs in training mode
        return self

    # --- corruption -------------------------------------------------------------------------

    def on_micro_batch(self, index: int, count: int) -> None:
        """Engine hook: with ``clean_scope='global-batch'`` only the last micro-batch of the last rank
        keeps its last sample clean: the global batch's last sample (``EpochShardSampler`` gives
        rank ``r`` positions ``r, r + W, ...``), the one the official single-GPU run keeps clean."""
        if self.config.clean_scope == "micro-batch":
            self._clean_here = True
        else:
            last_rank = self.context.rank == self.context.world_size - 1
            self._clean_here = last_rank and index == count - 1

    @property
    def keeps_clean_sample(self) -> bool:
        """Whether the current batch keeps its last sample clean (always, outside the engine)."""
        return self.config.clean_last and self._clean_here

    def corrupt_images(self, x: torch.Tensor) -> torch.Tensor:
        """Add per-image, per-channel scaled Gaussian noise; the step's clean sample stays clean."""
        if self.config.noise_std == 0:
            return x
        noisy = x + self.config.noise_std * x.std(dim=(2, 3), keepdim=True) * torch.randn_like(x)
        if self.keeps_clean_sample:
            noisy[-1] = x[-1]
        return noisy

    def sample_mask(self, shape: tuple[int, ...], device: torch.device | str = "cpu") -> torch.Tensor:
        """Boolean patch mask of ``shape`` (B, ...): per sample r ~ U(0, mask_max), then Bernoulli(r)."""
        batch = shape[0]
        ratio = torch.rand(batch, device=device) * self.config.mask_max
        mask = torch.rand(shape, device=device) < ratio.view(batch, *([1] * (len(shape) - 1)))
        if self.keeps_clean_sample:
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
            token = self.official.token() if self.official is not None else self.mask_token
            tokens = torch.where(patch_mask.unsqueeze(-1), token.to(tokens.dtype), tokens)
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

    # Recipe.optimizer_groups: decay on every trainable tensor of 2+ dims (pos_embed and
    # cls/reg tokens included, as the official code does); 1-D tensors skip it.

    def clip_gradients(self, max_norm: float, clip: Callable[[float], torch.Tensor]) -> torch.Tensor:
        """The engine's clipping (optimised parameters only), or the official bug when asked for."""
        if self.official is None:
            return clip(max_norm)
        return self.official.clip(max_norm, clip)

    def on_after_optimizer_step(self, step: int) -> None:
        self._clean_here = True  # outside a step (a held-out loss, an evaluation) the last sample is clean
        if self.official is not None:
            self.official.steps += 1

    def training_flops_per_sample(self, batch: dict[str, Any]) -> tuple[float | None, str]:
        """METHODS 8: teacher forward + 3 x (student forward + projector); the backward costs twice
        the forward and the frozen teacher has none."""
        from greenfm.models.flops import count_forward_flops

        x = batch["image"][:1]
        forward = count_forward_flops(self.teacher, x)
        projector = 0
        if self.projector is not None:
            with torch.no_grad():
                tokens = self.teacher.forward_features(x)
            projector = count_forward_flops(self.projector, tokens)
        return float(forward + 3 * (forward + projector)), "teacher forward + 3 x (student forward + projector)"

    def export_towers(self) -> dict[str, nn.Module]:
        return {"image": self.encoder}

    def export_model(self) -> nn.Module:
        """The plain timm student (projector, gamma and mask token are training-only)."""
        return self.student

    def export(
        self, out_dir: str | Path, *, preprocessing: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None
    ) -> Path:
        """Write ``out_dir/model.safetensors`` + ``config.json`` loadable by plain timm."""
        info = {"method": self.name, "method_config": self.config.to_dict(), **(metadata or {})}
        return export_encoder(self.encoder, out_dir, preprocessing=preprocessing, metadata=info)

