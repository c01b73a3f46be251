"""A timm ViT turned into a MED-PEFT classifier, in one of three adaptation modes.

``linear``: backbone frozen (and kept in eval mode), only the head trains.
``lora``:   a LoRA preset (``greenfm.adapt.lora``) plus the head train; all else frozen.
``full``:   every parameter trains, with layer-wise learning-rate decay.

The backbone's final ``norm`` and its own head are replaced by ``Identity``; the
head is ``PatchMeanHead`` (patch-token mean -> fresh ``fc_norm`` -> ``fc``).

CNN backbones (3-D ResNets ``r3d_18`` / ``r3d_18_lite``, timm ResNets) become a
``PooledClassifier``: their own global-average-pooled feature -> ``PooledHead`` (fresh
LayerNorm -> ``fc``), in ``linear`` or ``full`` mode (layer decay by stage); LoRA is
for ViTs and is refused for them in one line.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from greenfm.adapt.heads import PatchMeanHead, PooledHead
from greenfm.adapt.layer_decay import DEFAULT_LAYER_DECAY, layer_decay_groups, stage_depth
from greenfm.adapt.lora import add_lora, get_preset, lora_parameter_count, merge_lora
from greenfm.config import GreenfmConfig
from greenfm.errors import ConfigError, GreenfmError

Mode = Literal["linear", "lora", "full"]


class ClassifierConfig(GreenfmConfig):
    """How a ViT becomes a classifier; saved with every fine-tuning run."""

    num_classes: int = Field(..., ge=1, description="Outputs C (findings for multi-label, classes for multi-class).")
    mode: Mode = Field("lora", description="linear (head only), lora (LoRA + head) or full (everything).")
    preset: Literal["med-peft", "broad"] = Field(
        "med-peft", description="LoRA preset: med-peft (Q/V of fused qkv) or broad (qkv, proj, fc1, fc2)."
    )
    rank: int = Field(8, ge=1, description="LoRA rank r.")
    alpha: float = Field(32.0, gt=0, description="LoRA alpha; the update is scaled by alpha / r.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on the LoRA input.")
    layer_decay: float = Field(
        DEFAULT_LAYER_DECAY, gt=0, le=1, description="Layer-wise lr decay: block i x decay^(L-i); 1 = off."
    )
    lora_variant: str | None = Field(None, description="Filled in when built: how LoRA maps onto peft.")


class ViTClassifier(nn.Module):
    """timm ViT backbone (final norm removed) + ``PatchMeanHead``; see module docstring."""

    def __init__(self, backbone: nn.Module, config: ClassifierConfig):
        super().__init__()
        _check_vit(backbone)
        eps = getattr(backbone.norm, "eps", 1e-6)
        backbone.reset_classifier(0)
        backbone.norm = nn.Identity()  # MED-PEFT deletes the final norm; fc_norm replaces it
        if hasattr(backbone, "fc_norm"):
            backbone.fc_norm = nn.Identity()  # timm's own pooled-norm (global_pool='avg'); unused here

        self.config = config.model_copy()
        self.depth = len(backbone.blocks)
        self.head = PatchMeanHead(
            backbone.embed_dim, config.num_classes, num_prefix_tokens=backbone.num_prefix_tokens, eps=eps
        )
        if config.mode == "lora":
            self.config.lora_variant = get_preset(config.preset).variant
            backbone = add_lora(backbone, config.preset, rank=config.rank, alpha=config.alpha, dropout=config.dropout)
        elif config.mode == "linear":
            backbone.requires_grad_(False)
        self.backbone = backbone

    # ------------------------------------------------------------------ forward

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, D) tokens, without a final norm."""
        if self.config.mode == "linear":
            with torch.no_grad():
                return self.backbone.forward_features(images)
        return self.backbone.forward_features(images)

    def pre_logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, D) normalised patch-mean embedding."""
        return self.head.pool(self.forward_features(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, num_classes) logits."""
        return self.head(self.forward_features(images))

    def train(self, mode: bool = True) -> ViTClassifier:
        super().train(mode)
        if self.config.mode == "linear":
            self.backbone.eval()  # a frozen backbone keeps drop-path and dropout off
        return self

    # ------------------------------------------------------------------ training

    def optimizer_groups(self, weight_decay: float) -> list[dict]:
        """Trainable parameters grouped for the optimiser, with ``lr_scale`` and weight decay.

        Weight decay on >= 2-D parameters only; layer decay per ``config.layer_decay``.
        """
        return layer_decay_groups(
            self.named_parameters(), depth=self.depth, weight_decay=weight_decay, layer_decay=self.config.layer_decay
        )

    def parameter_counts(self) -> dict[str, float]:
        """Trainable, total (LoRA included) and LoRA parameters, and the trainable share in %."""
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {
            "trainable": trainable,
            "total": total,
            "lora": lora_parameter_count(self),
            "trainable_percent": 100.0 * trainable / total,
        }

    # ------------------------------------------------------------------ export

    def merge_(self) -> ViTClassifier:
        """Fold LoRA into the backbone weights in place; outputs are unchanged in eval."""
        self.backbone = merge_lora(self.backbone)
        return self

    def merged(self) -> ViTClassifier:
        """A LoRA-free deep copy for export; this model keeps its adapters."""
        return copy.deepcopy(self).merge_()


class PooledClassifier(nn.Module):
    """A CNN backbone whose forward returns its pooled feature (B, D) + ``PooledHead``.

    The 3-D ResNets' torchvision model (``fc = Identity``) and timm CNNs built with
    ``num_classes=0`` both return the global-average-pooled feature. Modes ``linear``
    (backbone frozen, in eval mode so BatchNorm statistics stay put) and ``full``
    (everything, layer decay stage by stage: stem, layer1-4, head).
    """

    def __init__(self, backbone: nn.Module, config: ClassifierConfig):
        super().__init__()
        if config.mode == "lora":
            raise ConfigError(f"LoRA applies to ViTs; {_kind(backbone)} is a CNN: use --mode linear or --mode full")
        self.config = config.model_copy()
        self.depth = 4  # ResNet stages
        self.head = PooledHead(pooled_width(backbone), config.num_classes)
        if config.mode == "linear":
            backbone.requires_grad_(False)
        self.backbone = backbone

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, [D,] H, W) -> (B, D) pooled feature."""
        if self.config.mode == "linear":
            with torch.no_grad():
                return self.backbone(images)
        return self.backbone(images)

    def pre_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.head.pool(self.forward_features(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(images))

    def train(self, mode: bool = True) -> PooledClassifier:
        super().train(mode)
        if self.config.mode == "linear":
            self.backbone.eval()
        return self

    def optimizer_groups(self, weight_decay: float) -> list[dict]:
        return layer_decay_groups(self.named_parameters(), depth=self.depth, weight_decay=weight_decay,
                                  layer_decay=self.config.layer_decay, depth_of=_backbone_stage_depth)  # fmt: skip

    def parameter_counts(self) -> dict[str, float]:
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"trainable": trainable, "total": total, "lora": 0, "trainable_percent": 100.0 * trainable / total}


def _backbone_stage_depth(name: str, depth: int) -> int:
    return stage_depth(name.removeprefix("backbone."), depth) if name.startswith("backbone.") else depth + 1


def pooled_width(backbone: nn.Module) -> int:
    """Width of a CNN's pooled feature: timm's ``num_features``, 512 for torchvision's 3-D ResNet."""
    width = getattr(backbone, "num_features", None)
    if isinstance(width, int):
        return width
    from torchvision.models.video import VideoResNet

    from greenfm.models.video3d import R3D_WIDTH

    if isinstance(backbone, VideoResNet):
        return R3D_WIDTH
    raise ConfigError(f"cannot tell the pooled feature width of {type(backbone).__name__}")


def _kind(backbone: nn.Module) -> str:
    from torchvision.models.video import VideoResNet

    return "this 3-D ResNet (r3d_18)" if isinstance(backbone, VideoResNet) else type(backbone).__name__


def is_vit(backbone: nn.Module) -> bool:
    return hasattr(backbone, "blocks") and hasattr(backbone, "num_prefix_tokens")


def is_pooling_cnn(backbone: nn.Module) -> bool:
    """A torchvision 3-D ResNet, or a timm CNN (``num_features`` and ``forward_features``) built without a head."""
    from torchvision.models.video import VideoResNet

    if isinstance(backbone, VideoResNet):
        return True
    return isinstance(getattr(backbone, "num_features", None), int) and hasattr(backbone, "forward_features")


def build_classifier(
    backbone: nn.Module, config: ClassifierConfig | None = None, **options
) -> ViTClassifier | PooledClassifier:
    """A ``ViTClassifier`` around a timm ViT (or an encoder whose ``.model`` is one); a
    ``PooledClassifier`` around a CNN (a 3-D ResNet or a timm CNN).

    Options are ``ClassifierConfig`` fields, e.g.
    ``build_classifier(vit, num_classes=14, mode="lora", preset="med-peft", rank=8)``.
    The backbone module is modified in place (norm and head removed, LoRA injected).
    """
    if config is None:
        from greenfm.config import build_config

        config = build_config(ClassifierConfig, **options)
    elif options:
        config = ClassifierConfig(**{**config.model_dump(), **options})
    if not hasattr(backbone, "blocks") and isinstance(getattr(backbone, "model", None), nn.Module):
        backbone = backbone.model
    if not is_vit(backbone) and is_pooling_cnn(backbone):
        return PooledClassifier(backbone, config)
    return ViTClassifier(backbone, config)  # anything else: one line naming what a ViT lacks


def _check_vit(backbone: nn.Module) -> None:
    needed = ("blocks", "norm", "embed_dim", "num_prefix_tokens", "forward_features", "reset_classifier")
    missing = [name for name in needed if not hasattr(backbone, name)]
    if missing:
        raise GreenfmError(
            f"fine-tuning needs a timm VisionTransformer; {type(backbone).__name__} lacks {', '.join(missing)}"
        )
