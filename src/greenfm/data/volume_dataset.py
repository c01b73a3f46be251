"""``VolumeDataset``: manifest rows of 3-D volumes -> normalised (C, D, H, W) tensors.

The same items as ``ImageDataset`` (``{"image": float32 (C, D, H, W), "labels": float32 (K,),
"index": int}``), from the decode-once cache or by decoding, through one pixel path
(``greenfm.data.decode`` -> ``greenfm.data.volumes.volume_to_stored``): the stored volume
at the contract's ``pad_size`` is cropped to ``size`` (a random crop when ``train``,
drawn from torch's RNG so the engine's seeding and DataLoader worker seeds make it
reproducible; the centre crop otherwise), normalised, then optionally augmented.
METHODS 3.7 trains without augmentation, the default here; ``volume_augment`` builds
a light MONAI one for those who want it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch

from greenfm.data.contract import Contract, normalize
from greenfm.data.dataset import ImageDataset
from greenfm.data.manifest import Manifest
from greenfm.data.volumes import crop_start, crop_volume
from greenfm.errors import ConfigError

if TYPE_CHECKING:
    from greenfm.data.cache import CacheStore


class VolumeDataset(ImageDataset):
    """Volumes and labels of a manifest, preprocessed per a volume ``Contract``.

    ``train`` picks the crop: random (or ``contract.train_crop="center"``) for training,
    centred for evaluation. ``augment`` acts on the normalised float32 (C, D, H, W) crop
    (e.g. ``volume_augment()``); ``normalized=False`` yields the stored crop instead.
    Everything else is ``ImageDataset``'s (cache rows, skipped rows, labels, ids).
    """

    serves_volumes = True

    def __init__(
        self,
        manifest: Manifest | str | Path,
        contract: Contract,
        *,
        train: bool = False,
        cache: CacheStore | None = None,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        labels: bool = True,
        findings: Sequence[str] | None = None,
        normalized: bool = True,
    ):
        if not contract.is_volume:
            raise ConfigError(f"VolumeDataset needs a volume contract (a 3-entry size), got size {tuple(contract.size)}")
        super().__init__(manifest, contract, cache=cache, augment=augment, labels=labels, findings=findings,
                         normalized=normalized)  # fmt: skip
        self.train = bool(train)

    @property
    def random_crop(self) -> bool:
        return self.train and self.contract.train_crop != "center"

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Several items; from a cache only each crop's window of the memory map is read."""
        size = tuple(self.contract.size)
        if self._rows is None:  # decode the whole stored volume, then crop
            crops = [crop_volume(self.pixels(int(i)), size, train=self.random_crop) for i in indices]  # type: ignore[arg-type]
        else:
            stored = self.cache.pixels
            crops = []
            for i in indices:
                d, h, w = crop_start(tuple(stored.shape[-3:]), size, train=self.random_crop)  # type: ignore[arg-type]
                window = stored[int(self._rows[i]), :, d : d + size[0], h : h + size[1], w : w + size[2]]
                crops.append(torch.from_numpy(np.array(window)))  # a copy: the memory map is read-only
        return self._items(indices, torch.stack(crops))

    def _items(self, indices: Sequence[int], crops: torch.Tensor) -> list[dict[str, Any]]:
        """Items from their stored crops (B, C, D, H, W), normalised together."""
        images = normalize(crops, self.contract).contiguous() if self.normalized else crops
        items = []
        for k, index in enumerate(indices):
            image = images[k]
            if self.augment is not None:
                image = torch.as_tensor(self.augment(image)).float()
            item: dict[str, Any] = {"image": image, "index": int(index)}
            if self._labels is not None:
                item["labels"] = torch.from_numpy(self._labels[index])
            items.append(item)
        return items


class SeededMonai:
    """A MONAI random transform drawing its randomness from torch's RNG.

    MONAI transforms keep their own NumPy ``RandomState``, which every DataLoader
    worker would copy unchanged (the same "random" draw in each worker) and which the
    engine's ``--seed`` does not reach; this re-seeds it from torch before each call.
    """

    def __init__(self, transform: Any):
        self.transform = transform

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.transform.set_random_state(seed=int(torch.randint(0, 2**31 - 1, (1,))))
        out = self.transform(x)
        return out.as_tensor() if hasattr(out, "as_tensor") else torch.as_tensor(out)


def volume_augment(*, flip: float = 0.5, intensity: float = 0.1, prob: float = 0.5) -> SeededMonai:
    """A light MONAI augmentation of a normalised (C, D, H, W) crop: left-right flip with
    probability ``flip``, intensity scaled and shifted by up to ``intensity`` with ``prob``.

    Not part of METHODS 3.7 (which trains without augmentation); opt in by passing it as
    ``augment``.
    """
    from monai.transforms import Compose, RandFlip, RandScaleIntensity, RandShiftIntensity

    return SeededMonai(Compose([
        RandFlip(prob=flip, spatial_axis=2),
        RandScaleIntensity(factors=intensity, prob=prob),
        RandShiftIntensity(offsets=intensity, prob=prob),
    ]))  # fmt: skip

