"""The UniCL loss (METHODS 5.1): symmetric cross-entropy against soft targets from shared labels.

With normalised image and text embeddings ``u``, ``v`` of the whole global batch and a
target id per pair, ``T_ij = 1[y_i = y_j] / |P(i)|`` where ``P(i) = {k : y_k = y_i}``::

    L_i2t = -(1/B) sum_i sum_j T_ij log softmax_j(s u_i . v_j)
    L_t2i = -(1/B) sum_j sum_i T_ij log softmax_i(s u_i . v_j)
    L     = (L_i2t + L_t2i) / 2

When every id is unique, T is the identity and this is CLIP's InfoNCE (open_clip's
``ClipLoss`` on the same features, checked in the tests and the benchmark).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_targets(ids: torch.Tensor) -> torch.Tensor:
    """(B, B) rows ``1[y_i = y_j] / |P(i)|``; the identity when all ids differ."""
    same = (ids.view(-1, 1) == ids.view(1, -1)).float()
    return same / same.sum(dim=1, keepdim=True)


def unicl_loss(
    image: torch.Tensor, text: torch.Tensor, ids: torch.Tensor | None, logit_scale: torch.Tensor
) -> torch.Tensor:
    """UniCL loss on L2-normalised (B, D) embeddings; ``ids`` None means all unique (CLIP).

    ``logit_scale`` is the log of the inverse temperature (``s = exp(logit_scale)``).
    """
    logits = logit_scale.exp() * image @ text.t()
    if ids is None or bool((ids.view(-1, 1) == ids.view(1, -1)).sum() == ids.numel()):
        labels = torch.arange(logits.shape[0], device=logits.device)
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
    targets = soft_targets(ids).to(logits.dtype)  # symmetric, so the column view uses it as well
    image_to_text = -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    text_to_image = -(targets * F.log_softmax(logits.t(), dim=1)).sum(dim=1).mean()
    return 0.5 * (image_to_text + text_to_image)
