"""3D ResNet-18 for volumes (CT, MRI): torchvision ``r3d_18`` with a new patchifying stem.

GreenRFM (METHODS 3.6) keeps torchvision's VideoResNet and replaces only
``stem[0]`` with ``Conv3d(in_chans, 64, k, stride=k, padding=0, bias=False)``
(k = 2 standard, k = 4 "lite"); the stem's BatchNorm/ReLU, ``AdaptiveAvgPool3d(1)``
and the four stages are torchvision's, and ``fc`` becomes ``Identity`` so the
model returns the 512-d pooled feature.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

# greenfm name -> stem kernel (= stride) of the replacement Conv3d
R3D_VARIANTS: dict[str, int] = {"r3d_18": 2, "r3d_18_lite": 4}
R3D_WIDTH = 512


def _triple(value: int | tuple[int, int, int] | list[int]) -> tuple[int, int, int]:
    if isinstance(value, int):
        return (value, value, value)
    return tuple(int(v) for v in value)  # type: ignore[return-value]


def r3d_spec(
    name: str,
    *,
    in_chans: int = 1,
    stem_kernel: int | tuple[int, int, int] | None = None,
    stem_stride: int | tuple[int, int, int] | None = None,
) -> dict[str, Any]:
    """The JSON-able recipe for a greenfm 3D ResNet, readable without greenfm.

    Rebuild by hand: ``m = torchvision.models.video.r3d_18()``, then
    ``m.stem[0] = nn.Conv3d(**spec["replace"]["stem.0"]["args"])`` and ``m.fc = nn.Identity()``.
    """
    kernel = _triple(stem_kernel if stem_kernel is not None else R3D_VARIANTS[name])
    stride = _triple(stem_stride if stem_stride is not None else kernel)
    conv_args = {
        "in_channels": int(in_chans),
        "out_channels": 64,
        "kernel_size": list(kernel),
        "stride": list(stride),
        "padding": 0,
        "bias": False,
    }
    return {
        "library": "torchvision",
        "name": "r3d_18",
        "kwargs": {},
        "replace": {"stem.0": {"type": "Conv3d", "args": conv_args}, "fc": {"type": "Identity", "args": {}}},
        "greenfm_name": name,
    }


def build_r3d(spec: dict[str, Any]) -> nn.Module:
    """Build the bare torchvision model described by :func:`r3d_spec` (random weights)."""
    from torchvision.models.video import r3d_18

    model = r3d_18(weights=None, **spec.get("kwargs", {}))
    conv_args = dict(spec["replace"]["stem.0"]["args"])
    conv_args["kernel_size"] = tuple(conv_args["kernel_size"])
    conv_args["stride"] = tuple(conv_args["stride"])
    model.stem[0] = nn.Conv3d(**conv_args)
    model.fc = nn.Identity()
    return model


def r3d_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer4 feature map (B, 512, D', H', W') of a torchvision VideoResNet."""
    x = model.stem(x)
    x = model.layer1(x)
    x = model.layer2(x)
    x = model.layer3(x)
    return model.layer4(x)
