"""What a recipe sees of the process group: rank, world size and a gradient-keeping all-gather.

Contrastive losses need every device's features as negatives. ``RunContext.all_gather``
concatenates a tensor from all ranks in rank order (sizes may differ, e.g. the last
batch of an epoch) and keeps the autograd graph for this rank's slice. Its backward sums
the incoming gradient over ranks before taking the local slice: every rank computes the
same global loss, so the summed gradient is W times the single-process gradient of the
local features, and DDP's mean over ranks then gives exactly the gradient one process
would compute on the whole global batch (open_clip's ``gather_with_grad`` and lightly's
``GatherLayer`` make the same choice).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _sizes(local: int, device: torch.device) -> list[int]:
    size = torch.tensor([local], device=device, dtype=torch.long)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    return [int(s) for s in sizes]


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 (uneven sizes padded); gradient summed over ranks, local slice returned."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        sizes = _sizes(tensor.shape[0], tensor.device)
        largest = max(sizes)
        padded = tensor
        if tensor.shape[0] < largest:
            pad = tensor.new_zeros((largest - tensor.shape[0], *tensor.shape[1:]))
            padded = torch.cat([tensor, pad])
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous())
        ctx.sizes, ctx.rank = sizes, dist.get_rank()
        return torch.cat([part[:n] for part, n in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` from every rank concatenated along dim 0; gradients reach this rank's slice."""
    if not _distributed():
        return tensor
    return _GatherWithGrad.apply(tensor)


def all_gather_objects(obj: object) -> list[object]:
    """A picklable object from every rank, in rank order (``[obj]`` in one process)."""
    if not _distributed():
        return [obj]
    out: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: object, src: int = 0) -> object:
    """Rank ``src``'s object on every rank (for decisions one rank makes for all)."""
    if not _distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


@dataclass(frozen=True)
class RunContext:
    """Handed to ``recipe.setup(ctx)`` before training: where this process sits in the run."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_global_zero(self) -> bool:
        return self.rank == 0

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's ``tensor`` in rank order along dim 0, gradient kept for the local slice."""
        return all_gather_with_grad(tensor)

    def all_gather_objects(self, obj: object) -> list[object]:
        return all_gather_objects(obj)

    def broadcast(self, obj: object, src: int = 0) -> object:
        return broadcast_object(obj, src)
