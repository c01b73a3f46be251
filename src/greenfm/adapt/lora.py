"""LoRA on timm ViTs through Hugging Face peft: the ``med-peft`` and ``broad`` presets.

``med-peft`` (METHODS §6.1) adapts only the fused ``attn.qkv`` of every block, and
within it only the Q and V slices: K is never touched. Plain peft
(``target_modules=["qkv"]``) would put one rank-r update on the whole 3D x D
matrix, adapting K and sharing A between Q and V (variant (a)) with the same
parameter count, so counts cannot tell them apart. greenfm uses variant (c):
``FusedQVLoraLinear``, a custom LoRA layer registered for the fused module through
peft's custom-module mechanism (``LoraConfig._register_custom_module``). peft then
still owns injection, trainability, merging and unloading.

``broad`` adapts ``attn.qkv``, ``attn.proj``, ``mlp.fc1`` and ``mlp.fc2`` with
peft's own LoRA layer (the whole weight of each module).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from peft import LoraConfig, LoraModel
from peft.tuners.lora.layer import Linear as PeftLoraLinear
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from greenfm.errors import ConfigError, GreenfmError

VARIANT_QV_FUSED = "qv-fused-custom-layer"  # METHODS §6.1 (c)
VARIANT_PEFT_LINEAR = "peft-linear"  # peft's LoRA on the whole weight of every target


@dataclass(frozen=True)
class LoraPreset:
    """Which modules a preset adapts (name suffixes) and how."""

    name: str
    targets: tuple[str, ...]
    variant: str
    description: str


LORA_PRESETS: dict[str, LoraPreset] = {
    "med-peft": LoraPreset(
        "med-peft", ("attn.qkv",), VARIANT_QV_FUSED, "Q and V slices of the fused attn.qkv of every block (MED-PEFT)"
    ),
    "broad": LoraPreset(
        "broad",
        ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"),
        VARIANT_PEFT_LINEAR,
        "whole qkv, attention output and both MLP layers of every block",
    ),
}


def get_preset(name: str) -> LoraPreset:
    """The preset called ``name``; an unknown name lists the valid ones."""
    if name not in LORA_PRESETS:
        raise ConfigError(f"unknown LoRA preset {name!r}; choose one of: {', '.join(LORA_PRESETS)}")
    return LORA_PRESETS[name]


class FusedQVLoraLinear(PeftLoraLinear):
    """LoRA on the Q and V row blocks of a fused ``qkv`` Linear (out = 3 x in); K untouched.

    One rank-r pair per adapted slice, stored as peft's usual ``lora_A`` / ``lora_B``:
    ``lora_A`` holds [A_q; A_v] (2r x D) and ``lora_B`` holds [B_q; B_v] (2D x r). The
    update is grouped, B_q acts on A_q's r outputs and B_v on A_v's, so that
    dW = [s B_q A_q; 0; s B_v A_v] with s = alpha / r. A is Kaiming-uniform (a = sqrt 5),
    B zero, dropout on the LoRA input, exactly as peft's ``Linear``; ``merge``,
    ``unmerge`` and ``merge_and_unload`` come from peft through ``get_delta_weight``.
    """

    def __init__(self, base_layer: nn.Module, adapter_name: str, config: LoraConfig | None = None, **kwargs):
        base = base_layer.get_base_layer() if isinstance(base_layer, BaseTunerLayer) else base_layer
        if not isinstance(base, nn.Linear) or base.out_features != 3 * base.in_features:
            shape = f"{base.in_features}->{base.out_features}" if isinstance(base, nn.Linear) else type(base).__name__
            raise GreenfmError(f"Q/V LoRA needs a fused qkv Linear with out = 3 x in; got {shape}")
        self.slice_features = base.in_features
        super().__init__(base_layer, adapter_name, config=config, **kwargs)

    def update_layer(self, adapter_name: str, r: int, lora_alpha: float, config: LoraConfig | None = None, **kwargs):
        # Written here, not inherited: peft's version sizes A and B for the whole weight.
        def option(name, default):
            return getattr(config, name, kwargs.get(name, default))

        if r <= 0:
            raise ConfigError(f"LoRA rank must be a positive integer, got {r}")
        if option("use_dora", False) or option("lora_bias", False):
            raise ConfigError("Q/V LoRA on a fused qkv supports neither DoRA nor LoRA bias")
        init = option("init_lora_weights", True)
        if init not in (True, False):
            raise ConfigError(f"Q/V LoRA supports init_lora_weights True or False, got {init!r}")
        dropout = option("lora_dropout", 0.0)
        use_rslora = option("use_rslora", False)

        self.r[adapter_name] = r
        self.lora_alpha[adapter_name] = lora_alpha
        self.scaling[adapter_name] = lora_alpha / (math.sqrt(r) if use_rslora else r)
        self.use_rslora[adapter_name] = use_rslora
        self.use_dora[adapter_name] = False
        self.lora_bias[adapter_name] = False
        self.lora_dropout[adapter_name] = nn.Dropout(p=dropout) if dropout > 0 else nn.Identity()
        self.lora_A[adapter_name] = nn.Linear(self.in_features, 2 * r, bias=False)
        self.lora_B[adapter_name] = nn.Linear(r, 2 * self.slice_features, bias=False)
        self.reset_lora_parameters(adapter_name, init)  # Kaiming-uniform A (fan-in D), zero B
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters)

    def _qv_deltas(self, adapter: str, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Grouped B: the first r columns of ``z`` through B_q, the last r through B_v."""
        z_q, z_v = z.chunk(2, dim=-1)
        b_q, b_v = self.lora_B[adapter].weight.chunk(2, dim=0)
        return z_q @ b_q.T, z_v @ b_v.T

    def get_delta_weight(self, adapter: str) -> torch.Tensor:
        weight_a = self.lora_A[adapter].weight
        dtype = weight_a.dtype
        a_q, a_v = weight_a.float().chunk(2, dim=0)
        b_q, b_v = self.lora_B[adapter].weight.float().chunk(2, dim=0)
        delta_q, delta_v = b_q @ a_q, b_v @ a_v
        delta = torch.cat([delta_q, torch.zeros_like(delta_q), delta_v], dim=0)
        return (delta * self.scaling[adapter]).to(dtype)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        self._check_forward_args(x, *args, **kwargs)
        if kwargs.pop("adapter_names", None) is not None:
            raise GreenfmError("Q/V LoRA does not support mixed-adapter batches")
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return self.base_layer(x, *args, **kwargs)
        result = self.base_layer(x, *args, **kwargs)
        if self.merged:
            return result
        for adapter in self.active_adapters:
            if adapter not in self.lora_A:
                continue
            lora_a = self.lora_A[adapter]
            z = lora_a(self.lora_dropout[adapter](x.to(lora_a.weight.dtype)))
            delta_q, delta_v = self._qv_deltas(adapter, z)
            delta = torch.cat([delta_q, torch.zeros_like(delta_q), delta_v], dim=-1) * self.scaling[adapter]
            result = result + delta.to(result.dtype)
        return result


def missing_targets(model: nn.Module, targets: tuple[str, ...]) -> list[str]:
    """The target suffixes that match no module of ``model`` (peft matches ``name.endswith('.' + t)``)."""
    names = [name for name, _ in model.named_modules()]
    return [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]


def lora_config(preset: str, *, rank: int, alpha: float = 32, dropout: float = 0.1) -> LoraConfig:
    """The peft ``LoraConfig`` of a preset; ``med-peft`` registers ``FusedQVLoraLinear``."""
    spec = get_preset(preset)
    if rank <= 0:
        raise ConfigError(f"LoRA rank must be a positive integer, got {rank}")
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(spec.targets), bias="none")
    if spec.variant == VARIANT_QV_FUSED:
        # Only the preset's targets (the fused qkv Linears) are dispatched, so mapping nn.Linear is exact.
        config._register_custom_module({nn.Linear: FusedQVLoraLinear})
    return config


def add_lora(model: nn.Module, preset: str, *, rank: int, alpha: float = 32, dropout: float = 0.1) -> LoraModel:
    """Inject a preset's LoRA into ``model`` in place; returns peft's ``LoraModel`` wrapping it.

    Everything but the LoRA weights is frozen (biases and LayerNorms included). A preset
    naming modules ``model`` lacks raises a one-line ``GreenfmError`` listing them.
    """
    spec = get_preset(preset)
    missing = missing_targets(model, spec.targets)
    if missing:
        raise GreenfmError(
            f"LoRA preset {preset!r} targets module(s) {', '.join(missing)} that {type(model).__name__} does not have"
        )
    return LoraModel(model, lora_config(preset, rank=rank, alpha=alpha, dropout=dropout), "default")


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold LoRA into the base weights and return the plain model (no-op without LoRA)."""
    if isinstance(model, LoraModel):
        return model.merge_and_unload()
    return model


def lora_parameter_count(model: nn.Module) -> int:
    """Number of LoRA parameters (A and B of every adapter) in ``model``."""
    return sum(p.numel() for name, p in model.named_parameters() if ".lora_A." in name or ".lora_B." in name)
