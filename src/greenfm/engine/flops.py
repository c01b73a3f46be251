"""Forward FLOPs counted with ``torch.utils.flop_counter.FlopCounterMode``.

Convention (METHODS.md section 8): 1 multiply-accumulate = 2 FLOPs; convolutions,
linear layers and both attention matmuls (QK^T and AV) are counted; softmax,
norms and activations are ignored. timm's fused attention runs through an SDPA
kernel that the counter does not see on CPU, so ``fused_attn`` is switched off on
every attention module while counting and restored afterwards. Counting works on
the ``meta`` device too (no memory, no compute), which keeps it fast for big models.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from greenfm.engine.rng import preserved_rng

FLOP_CONVENTION = "1 MAC = 2 FLOPs; conv, linear and both attention matmuls; softmax/norms/activations ignored"

# ops that hold attention's QK^T / AV products (explicit matmuls become bmm)
_ATTENTION_OPS = ("bmm", "baddbmm", "scaled_dot_product")


@contextmanager
def explicit_attention(model: nn.Module) -> Iterator[None]:
    """Set ``fused_attn=False`` on every module that has it; restore the old values on exit."""
    saved = [(m, m.fused_attn) for m in model.modules() if isinstance(getattr(m, "fused_attn", None), bool)]
    for module, _ in saved:
        module.fused_attn = False
    try:
        yield
    finally:
        for module, value in saved:
            module.fused_attn = value


@contextmanager
def unchanged_state(model: nn.Module) -> Iterator[None]:
    """Keep buffers (e.g. BatchNorm statistics), train/eval flags and the RNGs as they were."""
    modes = [(m, m.training) for m in model.modules()]
    buffers = [(b, b.detach().clone()) for b in model.buffers() if b.device.type != "meta"]
    try:
        with preserved_rng():
            yield
    finally:
        with torch.no_grad():
            for buffer, value in buffers:
                buffer.copy_(value)
        for module, mode in modes:
            module.training = mode


def count_flops_by_op(model: nn.Module, example_input: Any, *, call: str | None = None) -> dict[str, int]:
    """FLOPs per aten op for one forward of ``model`` on ``example_input``.

    ``example_input``: a tensor (``model(x)``), a tuple (``model(*x)``) or a mapping
    (``model(**x)``); with ``call="training_step"``, ``getattr(model, call)(example_input)``.
    Runs under ``no_grad`` with explicit attention; the model's state is left as found.
    """
    counter = FlopCounterMode(display=False)
    with explicit_attention(model), unchanged_state(model), torch.no_grad(), counter:
        if call is not None:
            getattr(model, call)(example_input)
        elif isinstance(example_input, tuple):
            model(*example_input)
        elif isinstance(example_input, Mapping):
            model(**example_input)
        else:
            model(example_input)
    return {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}


def count_forward_flops(model: nn.Module, example_input: Any, *, include_attention: bool = True) -> int:
    """Total forward FLOPs of ``model`` on ``example_input`` (pass a batch of one for per-image).

    ``include_attention=False`` leaves out the attention matmuls (bmm / SDPA ops), i.e.
    linear and convolution layers only.
    """
    by_op = count_flops_by_op(model, example_input)
    return sum(n for op, n in by_op.items() if include_attention or not is_attention_op(op))


def is_attention_op(op: str) -> bool:
    return any(name in op for name in _ATTENTION_OPS)


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
