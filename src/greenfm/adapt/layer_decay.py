"""Layer-wise learning-rate decay for ViT fine-tuning (BEiT / MAE style).

Depth 0 is the stem (patch embedding, position embedding, CLS / register tokens),
block i (0-based) is depth i + 1 and everything after the blocks (``fc_norm``,
``head``) is depth L + 1. A parameter at depth d gets ``lr_scale = decay ** (L + 1 - d)``:
the head x 1, block i x decay^(L - i), the stem x decay^(L + 1).

Written here rather than taken from ``timm.optim.param_groups_layer_decay`` because
timm keys depths on the bare timm module's names: peft's wrapping renames
parameters, and MED-PEFT's head lives outside the timm module with its final
``norm`` removed, which would shift every depth by one.

Each group carries ``lr_scale``; the engine's schedule multiplies the group's lr by it
(as timm's schedulers and MAE's ``lr_sched`` do).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from torch import nn

DEFAULT_LAYER_DECAY = 0.65

_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.")
_STEM = re.compile(r"(?:^|\.)(?:patch_embed|pos_embed|cls_token|reg_token|dist_token|norm_pre)(?:\.|$)")


def parameter_depth(name: str, depth: int) -> int:
    """0 for the stem, i + 1 for block i, ``depth + 1`` for anything after the blocks."""
    block = _BLOCK.search(name)
    if block:
        return int(block.group(1)) + 1
    if _STEM.search(name):
        return 0
    return depth + 1


def layer_decay_groups(
    named_parameters: Iterable[tuple[str, nn.Parameter]],
    *,
    depth: int,
    weight_decay: float,
    layer_decay: float = DEFAULT_LAYER_DECAY,
    depth_of: Callable[[str, int], int] | None = None,
) -> list[dict]:
    """Optimiser groups of the trainable parameters, keyed by (depth, decays or not).

    Weight decay applies to parameters with two or more dimensions only (METHODS §6.2);
    ``layer_decay=1`` gives every group ``lr_scale`` 1 (and puts them all at one depth).
    ``depth_of(name, depth)`` replaces ``parameter_depth`` (CNN stages, ``stage_depth``).
    """
    depth_of = depth_of or parameter_depth
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in named_parameters:
        if not param.requires_grad:
            continue
        d = depth_of(name, depth) if layer_decay != 1 else depth + 1
        decays = param.ndim >= 2
        key = (d, decays)
        if key not in groups:
            scale = float(layer_decay) ** (depth + 1 - d)
            groups[key] = {
                "params": [],
                "param_names": [],
                "weight_decay": weight_decay if decays else 0.0,
                "lr_scale": scale,
                "depth": d,
            }
        groups[key]["params"].append(param)
        groups[key]["param_names"].append(name)
    return [groups[k] for k in sorted(groups)]


_STAGE = re.compile(r"(?:^|\.)layer(\d+)\.")
_CNN_STEM = re.compile(r"(?:^|\.)(?:stem|conv1|bn1)(?:\.|$)")


def stage_depth(name: str, depth: int) -> int:
    """Depth of a ResNet parameter (2-D timm or 3-D torchvision): 0 for the stem, i for
    ``layer{i}``, ``depth + 1`` for the head; layer decay then runs stage by stage."""
    stage = _STAGE.search(name)
    if stage:
        return int(stage.group(1))
    if _CNN_STEM.search(name):
        return 0
    return depth + 1
