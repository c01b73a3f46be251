"""Forward FLOPs of a model, counted with ``torch.utils.flop_counter.FlopCounterMode``.

Convention (METHODS.md section 8): 1 multiply-accumulate = 2 FLOPs; convolutions,
linear layers and both attention matmuls (QK^T and AV) are counted; softmax,
norms and activations are ignored. timm's fused attention runs through an SDPA
kernel that the counter does not see on CPU, so ``fused_attn`` is switched off on
every attention module while counting and restored afterwards. Counting works on
the ``meta`` device too (no memory, no compute), which keeps it fast for big models.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Code inside may draw random numbers without moving Python's, NumPy's or torch's generators."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


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
