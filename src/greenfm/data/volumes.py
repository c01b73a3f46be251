"""3-D volume preprocessing (METHODS 3.6-3.7) built from MONAI transforms.

Axes are (C, D, H, W) throughout; sizes below are (D, H, W), spacings (z, y, x).

| preset       | spacing (mm)     | intensity                                     | pad/crop (pad value) | train / eval crop |
|--------------|------------------|-----------------------------------------------|----------------------|-------------------|
| ``ct-chest`` | 3.0 x 1.5 x 1.5  | HU clip [-1000, 200], (HU + 400) / 600        | 120x240x240 (-1)     | 96x192x192        |
| ``ct-abdomen`` | 3.0 x 1.5 x 1.5 | HU clip [-1000, 1000], HU / 1000             | 180x280x280 (-1)     | 144x224x224       |
| ``mri``      | as stored        | clip 1st-99th percentile, z-score             | 24x240x240 (0)       | 20x192x192        |

Training takes a random crop, evaluation a centre crop, both after padding, so
small volumes are padded rather than crashing (the official evaluation
centre-crops without padding). Sources stored as HU / 1000 (CT-RATE ``.npz``)
take ``input_scale=1000``. Volumes are first turned to one orientation (SPL:
slices from inferior to superior, rows anterior to posterior, columns right to
left, i.e. the usual axial display) so that DICOM and NIfTI sources agree (assumed;
METHODS is silent). MONAI is imported on first use: it takes seconds to import.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from greenfm.data.image_data import Volume
from greenfm.errors import ConfigError

Size3 = tuple[int, int, int]
Spacing3 = tuple[float, float, float]


@dataclass(frozen=True)
class VolumePreset:
    """Everything that turns a ``Volume`` into a model input tensor (1, D, H, W)."""

    name: str
    spacing: Spacing3 | None  # target (z, y, x) mm; None keeps the stored grid
    intensity: str  # "hu-window" or "percentile-zscore"
    hu_range: tuple[float, float] | None  # clipped HU range, mapped linearly onto [-1, 1]
    pad_size: Size3  # (D, H, W) after symmetric padding / centre cropping
    crop_size: Size3  # (D, H, W) random (train) or centre (eval) crop
    pad_value: float
    orientation: str | None = "SPL"
    input_scale: float = 1.0  # 1000 for HU / 1000 sources


PRESETS: dict[str, VolumePreset] = {
    "ct-chest": VolumePreset("ct-chest", (3.0, 1.5, 1.5), "hu-window", (-1000.0, 200.0), (120, 240, 240), (96, 192, 192), -1.0),
    "ct-abdomen": VolumePreset("ct-abdomen", (3.0, 1.5, 1.5), "hu-window", (-1000.0, 1000.0), (180, 280, 280), (144, 224, 224), -1.0),
    "mri": VolumePreset("mri", None, "percentile-zscore", None, (24, 240, 240), (20, 192, 192), 0.0),
}  # fmt: skip


def get_preset(name: str | VolumePreset, **overrides: Any) -> VolumePreset:
    """A preset by name, optionally with fields replaced (e.g. ``input_scale=1000``)."""
    if isinstance(name, VolumePreset):
        preset = name
    elif name in PRESETS:
        preset = PRESETS[name]
    else:
        raise ConfigError(f"unknown volume preset {name!r}; choose one of {', '.join(PRESETS)}")
    return replace(preset, **overrides) if overrides else preset


class VolumeTransform:
    """Volume -> float32 tensor (1, D, H, W) per a preset; random crop when ``train``.

    ``seed`` makes the random crops reproducible (``set_random_state`` re-seeds).
    """

    def __init__(self, preset: str | VolumePreset = "ct-chest", *, train: bool = False, seed: int | None = None, **overrides: Any):
        from monai.transforms import CenterSpatialCrop, RandSpatialCrop, ResizeWithPadOrCrop

        self.preset = get_preset(preset, **overrides)
        self.train = train
        self.pad = ResizeWithPadOrCrop(self.preset.pad_size, mode="constant", value=self.preset.pad_value)
        if train:
            self.crop = RandSpatialCrop(self.preset.crop_size, random_size=False)
            self.crop.set_random_state(seed)
        else:
            self.crop = CenterSpatialCrop(self.preset.crop_size)

    def set_random_state(self, seed: int | None) -> None:
        if self.train:
            self.crop.set_random_state(seed)

    def __call__(self, volume: Volume) -> torch.Tensor:
        p = self.preset
        if p.orientation:
            volume = reorient(volume, p.orientation)
        if p.input_scale != 1.0:
            volume = replace(volume, array=volume.array.astype(np.float32) * np.float32(p.input_scale))
        if p.spacing is not None:
            volume = resample(volume, p.spacing)
        x = torch.as_tensor(np.ascontiguousarray(volume.array, dtype=np.float32))[None]
        x = hu_window(x, *p.hu_range) if p.intensity == "hu-window" and p.hu_range else percentile_zscore(x)
        x = self.crop(self.pad(x))
        return _plain(x)


def resample(volume: Volume, spacing: Spacing3, *, mode: str = "bilinear") -> Volume:
    """Resample to ``spacing`` (z, y, x) mm with MONAI ``Spacing`` (``mode="nearest"`` for labels)."""
    from monai.data import MetaTensor
    from monai.transforms import Spacing

    x = MetaTensor(torch.as_tensor(np.asarray(volume.array, dtype=np.float32))[None], affine=torch.as_tensor(volume.affine))
    out = Spacing(pixdim=spacing, mode=mode, padding_mode="border", dtype=np.float32)(x)
    array = out.as_tensor()[0].numpy()
    if mode == "nearest" and volume.array.dtype.kind in "iu":
        array = array.round().astype(volume.array.dtype)
    affine = out.affine.numpy().astype(float)
    new_spacing = tuple(float(np.linalg.norm(affine[:3, i])) for i in range(3))
    return Volume(array, new_spacing, affine, dict(volume.metadata, resampled_to=tuple(spacing)))  # type: ignore[arg-type]


def reorient(volume: Volume, codes: str = "SPL") -> Volume:
    """Flip / permute axes so that they point towards ``codes`` (e.g. ``"SPL"``); no resampling."""
    from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

    current = io_orientation(volume.affine)
    target = axcodes2ornt(tuple(codes.upper()))
    transform = ornt_transform(current, target)
    if np.array_equal(transform, [[0, 1], [1, 1], [2, 1]]):
        return volume
    array = np.ascontiguousarray(apply_orientation(volume.array, transform))
    affine = volume.affine @ inv_ornt_aff(transform, volume.array.shape)
    spacing = tuple(float(np.linalg.norm(affine[:3, i])) for i in range(3))
    return Volume(array, spacing, affine, dict(volume.metadata, reoriented_to=codes.upper()))  # type: ignore[arg-type]


def hu_window(x: torch.Tensor | np.ndarray, lo: float, hi: float) -> torch.Tensor:
    """Clip HU to [lo, hi] and map linearly onto [-1, 1].

    Chest [-1000, 200] gives (HU + 400) / 600; abdomen [-1000, 1000] gives HU / 1000.
    """
    from monai.transforms import ScaleIntensityRange

    return _plain(ScaleIntensityRange(a_min=lo, a_max=hi, b_min=-1.0, b_max=1.0, clip=True)(_tensor(x)))


def percentile_zscore(x: torch.Tensor | np.ndarray, lower: float = 1.0, upper: float = 99.0) -> torch.Tensor:
    """Clip to the volume's own ``lower``-``upper`` percentiles, then zero mean and unit variance."""
    from monai.transforms import ClipIntensityPercentiles, NormalizeIntensity

    clipped = ClipIntensityPercentiles(lower=lower, upper=upper)(_tensor(x))
    return _plain(NormalizeIntensity()(clipped))


def pad_or_crop(x: torch.Tensor | np.ndarray, size: Size3, value: float = 0.0) -> torch.Tensor:
    """Symmetric constant padding / centre cropping of (C, D, H, W) to ``size``."""
    from monai.transforms import ResizeWithPadOrCrop

    return _plain(ResizeWithPadOrCrop(size, mode="constant", value=value)(_tensor(x)))


def center_crop(x: torch.Tensor | np.ndarray, size: Size3) -> torch.Tensor:
    from monai.transforms import CenterSpatialCrop

    return _plain(CenterSpatialCrop(size)(_tensor(x)))


def random_crop(x: torch.Tensor | np.ndarray, size: Size3, *, seed: int | None = None) -> torch.Tensor:
    """A random ``size`` crop of (C, D, H, W); the volume must be at least that large (pad first)."""
    from monai.transforms import RandSpatialCrop

    crop = RandSpatialCrop(size, random_size=False)
    crop.set_random_state(seed)
    return _plain(crop(_tensor(x)))


def _tensor(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.ndim != 4:
        raise ConfigError(f"expected a (C, D, H, W) volume, got shape {tuple(t.shape)}")
    return t.float()


def _plain(x) -> torch.Tensor:
    """MONAI returns MetaTensors; hand back a plain float32 tensor."""
    return (x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)).float()
