"""The MED-PEFT classification head: patch-token mean -> fresh LayerNorm -> Linear.

MED-PEFT (METHODS §6.1) drops the backbone's final ``norm`` and pools the patch
tokens only (no CLS, no registers), then normalises with a new ``fc_norm`` and
classifies with a linear layer initialised near zero (trunc-normal std 2e-5,
zero bias), as in MAE-style fine-tuning.
"""

from __future__ import annotations

import torch
from torch import nn

HEAD_INIT_STD = 2e-5


class PatchMeanHead(nn.Module):
    """Mean of the patch tokens -> ``fc_norm`` -> ``fc``; prefix tokens are skipped.

    Args:
        dim: token width D.
        num_classes: outputs C.
        num_prefix_tokens: leading CLS / register tokens to leave out of the mean.
        eps: LayerNorm epsilon (ViT-B uses 1e-6).
    """

    def __init__(self, dim: int, num_classes: int, *, num_prefix_tokens: int = 1, eps: float = 1e-6):
        super().__init__()
        self.num_prefix_tokens = num_prefix_tokens
        self.fc_norm = nn.LayerNorm(dim, eps=eps)
        self.fc = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.fc.weight, std=HEAD_INIT_STD)
        nn.init.zeros_(self.fc.bias)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, D) tokens -> (B, D) normalised mean of the patch tokens (the pre-logits)."""
        return self.fc_norm(tokens[:, self.num_prefix_tokens :].mean(dim=1))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(tokens))


class PooledHead(nn.Module):
    """A pooled feature (B, D) -> fresh ``fc_norm`` (LayerNorm) -> ``fc``: the CNN counterpart of
    ``PatchMeanHead`` (same initialisation), for backbones that pool themselves (3-D ResNets)."""

    def __init__(self, dim: int, num_classes: int, *, eps: float = 1e-6):
        super().__init__()
        self.fc_norm = nn.LayerNorm(dim, eps=eps)
        self.fc = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.fc.weight, std=HEAD_INIT_STD)
        nn.init.zeros_(self.fc.bias)

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, D) normalised (the pre-logits)."""
        return self.fc_norm(features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(features))
