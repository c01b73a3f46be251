"""Training augmentations (torchvision.transforms.v2) on stored uint8/uint16 tensors.

Every pipeline takes the cached (C, H, W) integer tensor and returns one of the
same dtype at the contract's size; ``normalize`` runs afterwards. When the contract
keeps a ``source_size`` above its ``size`` (the cache stores that resolution), the
pipeline runs there and its last crop or resize brings the image to ``size``: the
official RETFound-Green order (augment the 1024 px images, then crop or resize to
392), in which the crops downsample rather than upsample. Randomness
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
# Augmentations whose crops need a source resolution above the training size to
# downsample as the official pipeline does (greenfm's own presets are left as they were).
CROPS_FROM_SOURCE = frozenset({"rfg"})


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
    steps: list[nn.Module] = [v2.RandomHorizontalFlip(0.5), v2.RandomVerticalFlip(0.05)]
    if not contract.greyscale:
        steps.append(v2.RandomApply([RandomSideBars()], p=0.1))
    steps.append(v2.RandomApply([v2.RandomRotation(12.5, interpolation=InterpolationMode.NEAREST)], p=0.25))
    if not contract.greyscale:
        steps.append(v2.RandomApply([v2.ColorJitter(brightness=0.33, contrast=0.33)], p=0.25))
    steps.append(rfg_final_choice(contract))
    return v2.Compose(steps)


def rfg_final_choice(contract: Contract) -> v2.RandomChoice:
    """The last step of ``rfg``, from any input size to ``contract.size``: one of RandomResizedCrop,
    Resize(509) + CenterCrop(392) (scaled with the size) or a plain resize, uniformly."""
    size = list(contract.size)
    mode = _interpolation(contract)
    zoomed = [round(s * CENTER_CROP_ZOOM) for s in size]
    return v2.RandomChoice([
        v2.RandomResizedCrop(size, scale=(0.7, 1.0), ratio=(3 / 5, 5 / 3), interpolation=mode, antialias=True),
        # Resize(int) scales the shorter side, as torchvision's Resize(509) does.
        v2.Compose([v2.Resize(min(zoomed), interpolation=mode, antialias=True), v2.CenterCrop(size)]),
        v2.Resize(size, interpolation=mode, antialias=True),
    ])


def recommended_source_size(augment: str | None, contract: Contract) -> int | None:
    """The cache side for ``augment`` at ``contract.size`` (None: store at the training size).

    For ``rfg``: the centre-crop branch's zoomed side (509 at 392), rounded up to a
    multiple of 32, so 512 at 392: every centre crop and RandomResizedCrop of scale
    0.7-1 at ratio 1 then downsamples, at 1.7x the augmentation cost of 392 px on a
    CPU core instead of 7x for the official 1024 (BENCHMARKS.md). Pass
    ``source_size=1024`` (a contract field) to match the official resolution exactly.
    """
    if augment not in CROPS_FROM_SOURCE:
        return None
    side = max(round(s * CENTER_CROP_ZOOM) for s in contract.size)
    return -(-side // 32) * 32


def with_source_size(contract: Contract, augment: str | None, source_size: int | None = None) -> Contract:
    """``contract`` with the source resolution a training augmentation works at.

    ``source_size``: an explicit side (0 = the training size); None keeps the contract's
    own ``source_size``, else ``recommended_source_size``.
    """
    if source_size is None:
        source_size = contract.source_size[0] if contract.source_size else recommended_source_size(augment, contract)
    if not source_size or source_size <= max(contract.size):
        return contract.replace(source_size=None)
    h, w = contract.size
    return contract.replace(source_size=(round(source_size * h / max(h, w)), round(source_size * w / max(h, w))))


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
