"""Label policies: how uncertain (-1) and missing (NaN) labels enter a loss.

Each of the two cases is ``mask`` (left out of the loss), ``zeros``, ``ones``
or ``soft`` (target 0.5). The default masks both; the preset ``official``
maps both to zeros, the direction GreenRFM's released code pushes (it feeds
-1 straight into BCE, which is unbounded below for that target). After the
policy every target must lie in [0, 1]: anything else (a -1 the policy did not
handle cannot happen, but a 2 or a -3 in the data can) raises.

The masked loss is sum(bce * valid) / max(sum(valid), 1), as in GreenRFM's MRI code
(METHODS 3.3): ``masked_bce_with_logits`` is the one implementation, and
``policy_masked_bce`` (a policy applied to raw labels, then that loss) is what every
label-supervised objective calls, fine-tuning included. A run records its policy by
``LabelPolicy.name``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from greenfm.errors import BadInputError, ConfigError

CHOICES = ("mask", "zeros", "ones", "soft")
_FILL = {"zeros": 0.0, "ones": 1.0, "soft": 0.5}


@dataclass(frozen=True)
class LabelPolicy:
    """What uncertain (-1) and missing (NaN) labels become; serialisable with ``to_dict``."""

    uncertain: str = "mask"
    missing: str = "mask"

    def __post_init__(self) -> None:
        for name in ("uncertain", "missing"):
            if getattr(self, name) not in CHOICES:
                raise ConfigError(f"label policy: {name}='{getattr(self, name)}' must be one of {', '.join(CHOICES)}")

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @property
    def name(self) -> str:
        """The preset's name, else ``"uncertain=<p>,missing=<p>"``; ``label_policy(name)`` gives the policy back."""
        preset = next((key for key, policy in PRESETS.items() if policy == self), None)
        return preset or f"uncertain={self.uncertain},missing={self.missing}"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelPolicy:
        unknown = set(data) - {"uncertain", "missing"}
        if unknown:
            raise ConfigError(f"label policy: unknown key(s) {', '.join(sorted(unknown))}")
        return cls(**data)


PRESETS = {
    "default": LabelPolicy("mask", "mask"),
    "mask": LabelPolicy("mask", "mask"),  # the default by what it does
    "official": LabelPolicy("zeros", "zeros"),
    "u-ones": LabelPolicy("ones", "mask"),
    "u-zeros": LabelPolicy("zeros", "mask"),
    "u-soft": LabelPolicy("soft", "mask"),
}


def label_policy(spec: str | dict[str, Any] | LabelPolicy | None = None) -> LabelPolicy:
    """A policy from a preset name, ``"uncertain=ones,missing=zeros"``, a dict or a policy."""
    if spec is None:
        return PRESETS["default"]
    if isinstance(spec, LabelPolicy):
        return spec
    if isinstance(spec, dict):
        return LabelPolicy.from_dict(spec)
    text = str(spec).strip().lower()
    if text in PRESETS:
        return PRESETS[text]
    if "=" in text:
        pairs = [p.split("=", 1) for p in text.split(",") if p.strip()]
        return LabelPolicy.from_dict({k.strip(): v.strip() for k, v in pairs})
    raise ConfigError(
        f"unknown label policy '{spec}'; presets: {', '.join(PRESETS)}, or 'uncertain=<p>,missing=<p>' "
        f"with <p> in {', '.join(CHOICES)}"
    )


def apply_policy(labels: Any, policy: str | dict | LabelPolicy | None = None) -> tuple[Any, Any]:
    """(targets, valid) from an (N, K) label matrix of 1 / 0 / -1 / NaN.

    NumPy in, NumPy out (float32); a torch tensor in, tensors out on its device.
    Masked entries get target 0 and valid 0, so no NaN reaches the loss.
    """
    policy = label_policy(policy)
    if _is_tensor(labels):
        return _apply_policy_to_tensor(labels, policy)
    y = np.asarray(labels, dtype=np.float32)
    targets = y.copy()
    valid = np.ones_like(y, dtype=np.float32)
    for mask, choice in ((np.isnan(y), policy.missing), (y == -1.0, policy.uncertain)):
        if choice == "mask":
            targets[mask] = 0.0
            valid[mask] = 0.0
        else:
            targets[mask] = _FILL[choice]
    bad = (targets < 0.0) | (targets > 1.0)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        at = f"row {where[0]}, column {where[1]}" if len(where) == 2 else f"index {where}"
        raise BadInputError(
            f"{int(bad.sum())} label value(s) outside [0, 1] after the label policy, e.g. {float(y[where]):g} "
            f"at {at} (labels must be 1, 0, -1 or empty)"
        )
    return targets, valid


def _apply_policy_to_tensor(labels: Any, policy: LabelPolicy) -> tuple[Any, Any]:
    """``apply_policy`` on a tensor, on its device (no copy to the host in a training step)."""
    y = labels.detach().float()
    targets, valid = y.clone(), y.new_ones(y.shape)
    for mask, choice in ((y.isnan(), policy.missing), (y == -1.0, policy.uncertain)):
        targets = targets.masked_fill(mask, 0.0 if choice == "mask" else _FILL[choice])
        if choice == "mask":
            valid = valid.masked_fill(mask, 0.0)
    if ((targets < 0.0) | (targets > 1.0)).any():
        apply_policy(labels.detach().cpu().numpy(), policy)  # raises, naming the first bad entry
    return targets, valid


def valid_label_mask(labels: Any) -> Any:
    """True where a label tensor holds a 0 or 1 (not NaN = unknown, not -1 = uncertain)."""
    import torch

    return torch.isfinite(labels) & (labels >= 0)


def masked_bce_with_logits(logits, targets, valid, *, pos_weight=None):
    """sum(bce * valid) / max(sum(valid), 1): a mean over the entries that count (0, with a graph, when none do).

    ``pos_weight`` (K,) up-weights positives per finding, as in ``binary_cross_entropy_with_logits``.
    """
    import torch
    import torch.nn.functional as F

    loss = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), pos_weight=pos_weight, reduction="none")
    valid = valid.to(logits.dtype)
    return (loss * valid).sum() / torch.clamp(valid.sum(), min=1.0)


def policy_masked_bce(logits, labels, policy: str | dict | LabelPolicy | None = None, *, pos_weight=None):
    """The label-supervised BCE: ``apply_policy`` to raw labels (1 / 0 / -1 / NaN), then ``masked_bce_with_logits``."""
    targets, valid = apply_policy(labels, policy)
    return masked_bce_with_logits(logits, targets, valid, pos_weight=pos_weight)


def _is_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")
