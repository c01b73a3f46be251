"""The official RETFound-Green loop's gradient clipping, bug included (METHODS 2.3), emulated on request.

Used by ``TokenReconstruction`` when ``reproduce_official`` is set; never the default.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


class OfficialClipping(nn.Module):
    """Emulates the official loop's gradient clipping, bug included (METHODS 2.3); on request only.

    The official loop scales the loss by a CUDA ``GradScaler`` before ``backward``,
    unscales the optimiser's gradients, then clips ``model.parameters()``. Those include
    the mask token, which is in no optimiser group: ``zero_grad()`` never clears its
    gradient and ``unscale_()`` never unscales it, so the clip norm holds the token's
    accumulated, scaled gradient, and the in-place clip rescales that gradient too.

    Emulated on any device, without a real scaler: each backward adds ``scale`` x the mask
    token's gradient (the loss the engine back-propagates, micro-batch weights included)
    to a buffer; clipping takes the norm over the optimised (correctly unscaled) gradients
    and that buffer, and multiplies both by ``min(1, max_norm / (norm + 1e-6))`` as
    ``clip_grad_norm_`` does. ``scale`` follows the scaler's defaults assuming no overflow
    (none is expected with bf16 autocast): 65,536, doubled every 2,000 steps. Under DDP the
    token's gradient is averaged over ranks, as DDP would average a parameter's. The buffer
    and the step count are buffers, so a resumed run continues exactly.
    """

    INIT_SCALE, GROWTH_FACTOR, GROWTH_INTERVAL = 65536.0, 2.0, 2000
    WARNING = (
        "token-reconstruction: reproduce_official emulates the official clipping bug (a stale, GradScaler-scaled "
        "mask-token gradient inside the clip norm: clip coefficient ~1e-5, far smaller updates than the nominal lr); "
        "use it only to reproduce the published run's dynamics"
    )

    def __init__(self, recipe: nn.Module, width: int):
        super().__init__()
        object.__setattr__(self, "_recipe", recipe)  # not a submodule: no cycle in state_dict
        self.register_buffer("token_grad", torch.zeros(1, 1, width))  # the official token's .grad
        self.register_buffer("step_count", torch.zeros((), dtype=torch.long))
        # This step's part, before averaging over ranks: not a buffer, which DDP would overwrite
        # with rank 0's at every forward; it is zero between steps, so resume needs none.
        self.step_grad: torch.Tensor | None = None

    @property
    def steps(self) -> int:
        return int(self.step_count)

    @steps.setter
    def steps(self, value: int) -> None:
        self.step_count.fill_(value)

    @property
    def scale(self) -> float:
        """The scaler's scale at this step: 65,536 doubled every 2,000 steps without overflow."""
        return self.INIT_SCALE * self.GROWTH_FACTOR ** (self.steps // self.GROWTH_INTERVAL)

    def token(self) -> torch.Tensor:
        """The (zero) mask token as a leaf whose gradient, times ``scale``, joins ``step_grad``."""
        token = self._recipe.mask_token.detach().clone().requires_grad_(torch.is_grad_enabled())
        if token.requires_grad:
            token.register_hook(self._collect)
        return token

    def _collect(self, grad: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            part = grad.to(self.token_grad.dtype) * self.scale
            self.step_grad = part if self.step_grad is None else self.step_grad + part
        return grad

    def clip(self, max_norm: float, clip: Callable[[float], torch.Tensor]) -> torch.Tensor:
        """Clip as the official loop did; returns its total norm (what ``clip_grad_norm_`` returned)."""
        params_norm = clip(float("inf"))  # unscales (under a real scaler) and measures; clips nothing
        context = self._recipe.context
        new = self.step_grad if self.step_grad is not None else torch.zeros_like(self.token_grad)
        if context.world_size > 1:
            new = context.all_gather(new.detach()).mean(dim=0, keepdim=True)
        with torch.no_grad():
            self.token_grad.add_(new)
            self.step_grad = None
            total = torch.sqrt(params_norm.float() ** 2 + self.token_grad.float().pow(2).sum())
            coefficient = torch.clamp(max_norm / (total + 1e-6), max=1.0)
            for param in self._recipe.parameters():
                if param.requires_grad and param.grad is not None:
                    param.grad.mul_(coefficient.to(param.grad.dtype))
            self.token_grad.mul_(coefficient)
        return total
