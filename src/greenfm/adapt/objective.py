"""``ClassifierMethod``: the supervised fine-tuning objective the engine trains.

Multi-label: binary cross-entropy with logits per finding after the run's label
policy (``greenfm.labeling.policies.policy_masked_bce``), averaged over the labels
that count; by default unknown (NaN) and uncertain (-1) labels contribute nothing
(counting -1 as a BCE target is a known bug in some official code, METHODS
quirks). Multi-class: cross-entropy over one-hot label rows (or integer labels);
rows that are not exactly one-hot are ignored. Optional ``pos_weight`` (K,)
up-weights positives per finding.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from greenfm.errors import BadInputError
from greenfm.labeling.policies import LabelPolicy, label_policy, policy_masked_bce, valid_label_mask

Task = Literal["multilabel", "multiclass"]


def class_indices(labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """(B,) class indices from one-hot (B, K) rows or (B,) integer labels; others -> ``ignore_index``."""
    if labels.ndim == 1:
        ok = torch.isfinite(labels) & (labels >= 0)
        return torch.where(ok, labels.nan_to_num(0), torch.full_like(labels, ignore_index)).long()
    valid = valid_label_mask(labels)
    one_hot = valid.all(dim=1) & (torch.where(valid, labels, 0).sum(dim=1) == 1)
    index = torch.where(valid, labels, 0).argmax(dim=1)
    return torch.where(one_hot, index, torch.full_like(index, ignore_index))


def positive_weights(labels: np.ndarray) -> np.ndarray:
    """Per-finding negatives / positives over valid labels (1 where a finding has no positives)."""
    y = np.asarray(labels, dtype=float)
    valid = np.isfinite(y) & (y >= 0)
    pos = ((y == 1) & valid).sum(axis=0)
    neg = ((y == 0) & valid).sum(axis=0)
    return np.where(pos > 0, neg / np.maximum(pos, 1), 1.0).astype(np.float32)


class ClassifierMethod(nn.Module):
    """Wraps a classifier (images -> logits) as an engine method.

    ``training_step(batch)`` reads ``batch["image"]`` (B, C, H, W) and ``batch["labels"]``
    (B, K) and returns ``{"loss": ...}``. ``optimizer_groups`` and ``export_model``
    delegate to the model when it has them. ``policy`` (a ``LabelPolicy``, preset name
    or spec; default: mask uncertain and unknown) says how -1 and NaN enter the BCE.
    """

    def __init__(
        self, model: nn.Module, *, task: Task = "multilabel", pos_weight=None,
        policy: str | dict | LabelPolicy | None = None,
    ):  # fmt: skip
        super().__init__()
        if task not in ("multilabel", "multiclass"):
            raise BadInputError(f"unknown task {task!r}; choose multilabel or multiclass")
        if pos_weight is not None and task != "multilabel":
            raise BadInputError("pos_weight applies to multi-label (BCE) training only")
        self.model = model
        self.task = task
        self.policy = label_policy(policy)
        if task == "multiclass" and self.policy != label_policy(None):
            raise BadInputError("a label policy applies to multi-label (BCE) training only")
        self.register_buffer(
            "pos_weight", None if pos_weight is None else torch.as_tensor(pos_weight, dtype=torch.float32)
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.task == "multiclass":
            targets = class_indices(labels)
            if (targets < 0).all():
                return logits.sum() * 0.0
            return F.cross_entropy(logits.float(), targets, ignore_index=-100)
        return policy_masked_bce(logits.float(), labels.float(), self.policy, pos_weight=self.pos_weight)

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        logits = self(batch["image"])
        labels = batch["labels"].to(logits.device)
        loss = self.loss(logits, labels)
        return {"loss": loss, "labelled": valid_label_mask(labels).float().mean().detach()}

    @torch.no_grad()
    def predict_scores(self, images: torch.Tensor) -> torch.Tensor:
        """Probabilities: sigmoid per finding (multi-label) or softmax over classes (multi-class)."""
        logits = self(images).float()
        return logits.softmax(dim=-1) if self.task == "multiclass" else logits.sigmoid()

    def optimizer_groups(self, weight_decay: float) -> list[dict]:
        if hasattr(self.model, "optimizer_groups"):
            return self.model.optimizer_groups(weight_decay)
        decay = [p for p in self.parameters() if p.requires_grad and p.ndim >= 2]
        no_decay = [p for p in self.parameters() if p.requires_grad and p.ndim < 2]
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    def evaluation_model(self) -> nn.Module:
        """What the engine's per-epoch evaluation sees: the classifier as it trains, LoRA unmerged
        (the same function as the merged export, without copying and merging it every epoch)."""
        return self.model

    def export_model(self) -> nn.Module:
        """The classifier to export, LoRA merged into the backbone when it has any."""
        return self.model.merged() if hasattr(self.model, "merged") else self.model
