"""Image encoders: one ``create_encoder`` for timm 2D models, greenfm's tiny test ViTs and 3D ResNets.

An :class:`Encoder` wraps the bare library model (``encoder.model``, a plain timm
or torchvision module) and adds what greenfm needs around it: token/feature-map
pooling, the embedding width, the JSON ``spec`` that rebuilds the bare model
without greenfm, and a record of where its weights came from.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from greenfm.errors import ConfigError
from greenfm.models.mri import (
    MRI_OVERRIDES,
    MRI_VARIANTS,
    ThreePlaneR3D,
    build_three_plane_r3d,
    is_three_plane_spec,
    load_three_plane_weights,
    mri_spec,
)
from greenfm.models.video3d import R3D_VARIANTS, R3D_WIDTH, build_r3d, r3d_features, r3d_spec
from greenfm.models.weights import LoadReport, load_weights

logger = logging.getLogger(__name__)

# Tiny configs for tests and laptops: a timm base name plus kwargs, so that
# ``timm.create_model(base, **kwargs)`` rebuilds them with no greenfm code.
# ``vit_tiny_test`` is DINOv2-shaped (4 registers, LayerScale, patch-only pos-embed).
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "vit_tiny_test": {
        "base": "vit_small_patch14_reg4_dinov2",
        "img_size": 32,
        "kwargs": {
            "patch_size": 8, "embed_dim": 64, "depth": 4, "num_heads": 4,
            "reg_tokens": 4, "init_values": 1e-5, "no_embed_class": True,
        },
    },
}

# Canonical pooling names, and the aliases METHODS.md uses.
TOKEN_POOLS = ("mean-all-tokens", "mean-patch-tokens", "cls")
MAP_POOLS = ("avg",)
POOL_ALIASES = {"all_mean": "mean-all-tokens", "patch_mean": "mean-patch-tokens", "mean": "mean-all-tokens"}


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


class Encoder(nn.Module):
    """A backbone with greenfm's embedding contract.

    Attributes:
        model: the bare timm / torchvision module (what exports contain).
        spec: JSON-able recipe rebuilding ``model`` without greenfm
            (``library``, ``name``, ``kwargs``; 3D ResNets add ``replace``).
        family: ``"tokens"`` (ViT-like, features are (B, N, D)), ``"map2d"``
            (CNN, (B, C, H, W)) or ``"map3d"`` (3D ResNet, (B, C, D, H, W)).
        embed_dim: width of ``embed`` output.
        num_prefix_tokens: CLS + register tokens (0 for CNNs).
        default_pool: pooling used when ``pool`` is not given.
        weights_source: ``{"kind": "random"}``, ``{"kind": "file", "path", "sha256"}``
            or ``{"kind": "hub", "name", ...}``.
        load_report: keys missing / unexpected / skipped / resampled at load.
        preprocessing: the input contract (a dict) when known, e.g. from an export.
    """

    def __init__(
        self,
        model: nn.Module,
        spec: dict[str, Any],
        *,
        weights_source: dict[str, Any] | None = None,
        load_report: LoadReport | None = None,
        preprocessing: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.model = model
        self.spec = spec
        self.weights_source = weights_source or {"kind": "unknown"}
        self.load_report = load_report or LoadReport()
        self.preprocessing = preprocessing
        if spec.get("library") == "torchvision":
            self.family, self.embed_dim, self.num_prefix_tokens = "map3d", R3D_WIDTH, 0
        elif isinstance(getattr(model, "num_prefix_tokens", None), int) and hasattr(model, "blocks"):
            self.family = "tokens"
            self.embed_dim = int(model.num_features)
            self.num_prefix_tokens = int(model.num_prefix_tokens)
        else:
            self.family, self.embed_dim, self.num_prefix_tokens = "map2d", int(model.num_features), 0
        self.default_pool = "mean-all-tokens" if self.family == "tokens" else "avg"

    @property
    def has_pretrained_source(self) -> bool:
        """True when the weights came from a file or a hub, not a random init."""
        return self.weights_source.get("kind") in ("file", "hub")

    @property
    def pool_modes(self) -> tuple[str, ...]:
        return TOKEN_POOLS if self.family == "tokens" else MAP_POOLS

    @property
    def img_size(self) -> tuple[int, ...] | None:
        """The fixed input size of a ViT (H, W); None where any size works."""
        patch_embed = getattr(self.model, "patch_embed", None)
        size = getattr(patch_embed, "img_size", None)
        return tuple(size) if size is not None else None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Final-normed tokens (B, N, D) for ViTs; the last feature map for CNNs."""
        if self.family == "map3d":
            if isinstance(self.model, ThreePlaneR3D):  # (B, 512, planes, D', H', W'): pooling averages the planes
                return self.model.forward_features(x)
            return r3d_features(self.model, x)
        return self.model.forward_features(x)

    def resolve_pool(self, mode: str | None) -> str:
        mode = POOL_ALIASES.get(mode, mode) if mode else self.default_pool
        if mode not in self.pool_modes:
            raise ConfigError(f"pool '{mode}' does not apply to this {self.family} encoder; valid: {list(self.pool_modes)}")
        if mode == "cls" and getattr(self.model, "cls_token", None) is None:
            raise ConfigError("pool 'cls' needs a class token, and this model has none")
        return mode

    def pool(self, features: torch.Tensor, mode: str | None = None) -> torch.Tensor:
        """(B, D) from ``forward_features`` output."""
        mode = self.resolve_pool(mode)
        if mode == "mean-all-tokens":
            return features.mean(dim=1)
        if mode == "mean-patch-tokens":
            return features[:, self.num_prefix_tokens:].mean(dim=1)
        if mode == "cls":
            return features[:, 0]
        if getattr(self.model, "output_fmt", "NCHW") == "NHWC":  # timm models that keep channels last
            return features.mean(dim=tuple(range(1, features.ndim - 1)))
        return features.mean(dim=tuple(range(2, features.ndim)))

    def embed(self, x: torch.Tensor, pool: str | None = None) -> torch.Tensor:
        return self.pool(self.forward_features(x), pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x)


def _timm_spec(name: str, *, img_size: int | None, in_chans: int, overrides: dict[str, Any]) -> dict[str, Any]:
    import timm

    tiny = TINY_CONFIGS.get(name)
    if tiny is not None:
        base, kwargs = tiny["base"], dict(tiny["kwargs"])
        img_size = img_size if img_size is not None else tiny["img_size"]
    else:
        base, kwargs = name, {}
        if not timm.is_model(base):
            close = timm.list_models(f"*{base.split('.')[0]}*")[:5]
            valid = sorted(TINY_CONFIGS) + sorted(R3D_VARIANTS) + sorted(MRI_VARIANTS)
            raise ConfigError(
                f"unknown encoder '{name}': not a timm model (close: {close}) nor one of greenfm's {valid}"
            )
    kwargs["num_classes"] = 0
    kwargs["in_chans"] = in_chans
    if img_size is not None:
        kwargs["img_size"] = img_size
    kwargs.update(overrides)
    return {"library": "timm", "name": base, "kwargs": _jsonable(kwargs)}


def build_model(spec: dict[str, Any]) -> nn.Module:
    """The bare model (random init) that ``spec`` describes."""
    if spec["library"] == "torchvision":
        return build_three_plane_r3d(spec) if is_three_plane_spec(spec) else build_r3d(spec)
    import timm

    try:
        return timm.create_model(spec["name"], pretrained=False, **spec["kwargs"])
    except TypeError as exc:  # an override the model family does not take
        raise ConfigError(f"encoder '{spec['name']}' rejects an option: {exc}") from None


def encoder_spec(name: str, *, img_size: int | None = None, in_chans: int | None = None, **overrides: Any) -> dict[str, Any]:
    """The JSON spec ``create_encoder(name, ...)`` would build, without building it."""
    if name in MRI_VARIANTS:
        return mri_spec(name, in_chans=3 if in_chans is None else in_chans, **overrides)
    if name in R3D_VARIANTS:
        return r3d_spec(name, in_chans=1 if in_chans is None else in_chans, **overrides)
    return _timm_spec(name, img_size=img_size, in_chans=3 if in_chans is None else in_chans, overrides=overrides)


def same_architecture(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two specs build the same network up to input size (ViT position embeddings are resampled)."""
    def key(spec: dict[str, Any]) -> tuple[Any, ...]:
        kwargs = {k: v for k, v in (spec.get("kwargs") or {}).items() if k != "img_size"}
        planes = spec.get("planes")  # the three-plane MRI encoder is not a one-tower r3d_18
        return spec.get("library"), spec.get("name"), sorted(kwargs.items(), key=lambda kv: kv[0]).__repr__(), planes

    return key(a) == key(b)


def create_encoder(
    name: str,
    *,
    weights: str | Path | None = "random",
    img_size: int | None = None,
    in_chans: int | None = None,
    **overrides: Any,
) -> Encoder:
    """Build an encoder by name and load its initial weights.

    Args:
        name: a timm model name (``vit_small_patch14_reg4_dinov2``, ``resnet50``, ...),
            a greenfm tiny config (``vit_tiny_test``), a 3D ResNet (``r3d_18``,
            ``r3d_18_lite``) or the three-plane MRI encoder (``r3d_18_mri``, input
            (B, 3 planes, 3 sequences, D, H, W); ``greenfm.models.mri``).
        weights: ``"random"``; a local ``.safetensors`` / torch state-dict file;
            ``"hf-hub:org/name"``; ``"timm"`` (the name's pretrained tag);
            ``"torchvision"`` (Kinetics-400, 3D ResNets). Position embeddings are
            resampled to ``img_size``; a grey ``in_chans=1`` stem sums RGB weights.
        img_size: ViT input size (square); None keeps the model's default. Models
            without a fixed size (CNNs) ignore it.
        in_chans: input channels; default 3 for 2D models, 1 for 3D ResNets.
        overrides: further timm kwargs (e.g. ``drop_path_rate``, ``dynamic_img_size``)
            or, for 3D ResNets, ``stem_kernel`` / ``stem_stride``.
    """
    if name in MRI_VARIANTS:  # three planes x (PD, T1, T2): input (B, 3, 3, D, H, W)
        if img_size is not None or set(overrides) - MRI_OVERRIDES:
            given = sorted(set(overrides) - MRI_OVERRIDES) + (["img_size"] if img_size is not None else [])
            raise ConfigError(f"encoder '{name}' takes only in_chans and stem_kernel/stem_stride, got {given}")
        spec = mri_spec(name, in_chans=3 if in_chans is None else in_chans, **overrides)
        model = build_three_plane_r3d(spec)
        source, report = load_three_plane_weights(model, weights)
        return Encoder(model, spec, weights_source=source, load_report=report)
    if name in R3D_VARIANTS:
        if img_size is not None:
            raise ConfigError(f"img_size does not apply to the 3D encoder '{name}'; it takes any (D, H, W)")
        unknown = set(overrides) - {"stem_kernel", "stem_stride"}
        if unknown:
            raise ConfigError(f"encoder '{name}' takes only stem_kernel/stem_stride overrides, got {sorted(unknown)}")
        spec = r3d_spec(name, in_chans=1 if in_chans is None else in_chans, **overrides)
    else:
        spec = _timm_spec(name, img_size=img_size, in_chans=3 if in_chans is None else in_chans, overrides=overrides)
    try:
        model = build_model(spec)
    except ConfigError:
        if "img_size" not in spec["kwargs"]:
            raise
        # CNNs take any input size and have no img_size argument; ViTs need it.
        del spec["kwargs"]["img_size"]
        model = build_model(spec)
    source, report = load_weights(model, weights, library=spec["library"])
    return Encoder(model, spec, weights_source=source, load_report=report)
