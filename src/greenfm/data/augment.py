"""Training augmentations (torchvision.transforms.v2) on stored uint8/uint16 tensors.

Every pipeline takes the cached (C, H, W) integer tensor and returns one of the
same dtype at the contract's size; ``normalize`` runs afterwards. Randomness
comes from torch's generator only, so ``torch.manual_seed`` reproduces a
pipeline exactly (DataLoader workers get distinct torch seeds).

- ``rfg``: RETFound-Green pre-training (METHODS 2.4);
- ``cxr``: light chest X-ray augmentation (small crops and rotations, no flips);
- ``medpeft``: MED-PEFT / MRM fine-tuning (RandomResizedCrop 0.08-1, h-flip).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from greenfm.data.contract import Contract
from greenfm.errors import ConfigError

# RETFound-Green draws side-bar widths of randint(33, 150) px on its offline
# preprocessed 1024x1024 images; we keep that fraction of the image width.
SIDE_BAR_PIXELS = (33, 150)
SIDE_BAR_REFERENCE_WIDTH = 1024
# Resize(int(392 * 1.3)) = Resize(509) before CenterCrop(392): a 509/392 zoom.
CENTER_CROP_ZOOM = 509 / 392


class RandomSideBars(nn.Module):
    """Pad black bars of one random width on the left and right (mimics a poorly cropped fundus).

    Widths are ``randint(33, 150)`` px at ``SIDE_BAR_REFERENCE_WIDTH``, scaled to
    the input width. The image widens; the crop/resize that follows restores the size.
    """

    def __init__(self, pixels: tuple[int, int] = SIDE_BAR_PIXELS, reference_width: int = SIDE_BAR_REFERENCE_WIDTH):
        super().__init__()
        self.pixels, self.reference_width = pixels, reference_width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        drawn = int(torch.randint(self.pixels[0], self.pixels[1], ()).item())  # upper bound excluded, as numpy's
        bar = max(1, round(drawn * x.shape[-1] / self.reference_width))
        return TF.pad(x, [bar, 0, bar, 0], fill=0)


def rfg_augment(contract: Contract) -> v2.Compose:
    """RETFound-Green training augmentation, in the paper's order, ending at ``contract.size``.

    Side bars and colour jitter are left out for greyscale modalities.
    """
    size = list(contract.size)
    mode = _interpolation(contract)
    zoomed = [round(s * CENTER_CROP_ZOOM) for s in size]
    steps: list[nn.Module] = [v2.RandomHorizontalFlip(0.5), v2.RandomVerticalFlip(0.05)]
    if not contract.greyscale:
        steps.append(v2.RandomApply([RandomSideBars()], p=0.1))
    steps.append(v2.RandomApply([v2.RandomRotation(12.5, interpolation=InterpolationMode.NEAREST)], p=0.25))
    if not contract.greyscale:
        steps.append(v2.RandomApply([v2.ColorJitter(brightness=0.33, contrast=0.33)], p=0.25))
    steps.append(
        v2.RandomChoice([
            v2.RandomResizedCrop(size, scale=(0.7, 1.0), ratio=(3 / 5, 5 / 3), interpolation=mode, antialias=True),
            # Resize(int) scales the shorter side, as torchvision's Resize(509) does.
            v2.Compose([v2.Resize(min(zoomed), interpolation=mode, antialias=True), v2.CenterCrop(size)]),
            v2.Resize(size, interpolation=mode, antialias=True),
        ])
    )
    return v2.Compose(steps)


def cxr_augment(contract: Contract, *, degrees: float = 10.0) -> v2.Compose:
    """Light CXR augmentation: RandomResizedCrop(scale 0.8-1), rotation up to ``degrees``, no flips."""
    mode = _interpolation(contract)
    return v2.Compose([
        v2.RandomRotation(degrees, interpolation=InterpolationMode.BILINEAR),
        v2.RandomResizedCrop(list(contract.size), scale=(0.8, 1.0), interpolation=mode, antialias=True),
    ])


def medpeft_augment(contract: Contract) -> v2.Compose:
    """MED-PEFT (MRM) fine-tuning: RandomResizedCrop(scale 0.08-1), horizontal flip (METHODS 6.2)."""
    mode = _interpolation(contract)
    return v2.Compose([
        v2.RandomResizedCrop(list(contract.size), scale=(0.08, 1.0), interpolation=mode, antialias=True),
        v2.RandomHorizontalFlip(0.5),
    ])


AUGMENTATIONS: dict[str, Callable[[Contract], v2.Compose]] = {
    "rfg": rfg_augment,
    "cxr": cxr_augment,
    "medpeft": medpeft_augment,
}


def get_augment(name: str | None, contract: Contract) -> v2.Compose | None:
    """A named training augmentation for ``contract``; ``None`` or ``"none"`` for none."""
    if name is None or name == "none":
        return None
    if name not in AUGMENTATIONS:
        raise ConfigError(f"unknown augmentation {name!r}; choose one of {', '.join(AUGMENTATIONS)} or none")
    return AUGMENTATIONS[name](contract)


def _interpolation(contract: Contract) -> InterpolationMode:
    return InterpolationMode.BICUBIC if contract.interpolation == "bicubic" else InterpolationMode.BILINEAR
