"""FLOPs of a method's training step, for the ledger.

Counting a model's forward (the convention of METHODS.md section 8, explicit attention
while counting) lives in ``greenfm.models.flops``, so recipes can count their own towers;
this module adds what the engine needs around it: a method's ``training_step`` per sample,
and the export model's forward per image.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from greenfm.models.flops import (  # noqa: F401  (re-exported: the engine's counting API)
    FLOP_CONVENTION,
    count_flops_by_op,
    count_forward_flops,
    explicit_attention,
    is_attention_op,
    unchanged_state,
)


def count_step_flops_per_sample(method: nn.Module, batch: Mapping[str, Any], *, samples: int = 2) -> float:
    """Forward FLOPs of ``method.training_step`` per sample, on the first ``samples`` of ``batch``."""
    size = batch_size_of(batch)
    k = max(1, min(samples, size))
    return sum(count_flops_by_op(method, slice_batch(batch, k), call="training_step").values()) / k


def method_flops(method: nn.Module, batch: Mapping[str, Any]) -> dict[str, Any]:
    """What the ledger reports about a method, from one (device-resident) training batch.

    ``step_forward_flops_per_sample``: ``training_step`` forward per sample (all towers,
    teacher included); ``forward_flops_per_image``: ``export_model()`` on one ``batch["image"]``.
    A count that fails leaves a ``*_reason`` instead: counting never stops training.
    """
    out: dict[str, Any] = {}
    try:
        out["step_forward_flops_per_sample"] = count_step_flops_per_sample(method, batch)
    except Exception as exc:  # an op the counter cannot follow
        out["step_forward_reason"] = f"training_step could not be counted ({type(exc).__name__}: {exc})"
    image = batch.get("image") if isinstance(batch, Mapping) else None
    if not hasattr(method, "export_model"):
        out["forward_reason"] = "the method has no export_model()"
    elif not isinstance(image, torch.Tensor):
        out["forward_reason"] = "the batch has no 'image' tensor"
    else:
        try:
            out["forward_flops_per_image"] = count_forward_flops(method.export_model(), image[:1])
        except Exception as exc:  # as above
            out["forward_reason"] = f"the export model could not be counted ({type(exc).__name__}: {exc})"
    return out


def batch_size_of(batch: Any) -> int:
    """Samples in a collated batch: the leading size of its first tensor (or list)."""
    values = batch.values() if isinstance(batch, Mapping) else [batch]
    for value in values:
        if isinstance(value, torch.Tensor) and value.ndim > 0:
            return int(value.shape[0])
    for value in values:
        if isinstance(value, (list, tuple)):
            return len(value)
    raise ValueError("cannot tell the batch size: the batch holds no tensor or list")


def slice_batch(batch: Mapping[str, Any], k: int) -> dict[str, Any]:
    """The first ``k`` samples of a collated batch (tensors and lists are cut, other values kept)."""
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if (isinstance(value, torch.Tensor) and value.ndim > 0) or isinstance(value, (list, tuple)):
            out[key] = value[:k]
        elif isinstance(value, Mapping):
            out[key] = slice_batch(value, k)
        else:
            out[key] = value
    return out
