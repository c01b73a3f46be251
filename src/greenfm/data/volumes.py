"""3-D volume preprocessing (METHODS 3.6-3.7) built from MONAI transforms.

Axes are (C, D, H, W) throughout; sizes below are (D, H, W), spacings (z, y, x).
The presets are volume ``Contract``s (``greenfm.data.contract.PRESETS``), picked like
the 2-D ones (``--contract ct-chest``):

| preset       | spacing (mm)     | intensity                                     | pad/crop (pad value) | train / eval crop |
|--------------|------------------|-----------------------------------------------|----------------------|-------------------|
| ``ct-chest`` | 3.0 x 1.5 x 1.5  | HU clip [-1000, 200], (HU + 400) / 600        | 120x240x240 (-1)     | 96x192x192        |
| ``ct-abdomen`` | 3.0 x 1.5 x 1.5 | HU clip [-1000, 1000], HU / 1000             | 180x280x280 (-1)     | 144x224x224       |
| ``mri``      | as stored        | clip 1st-99th percentile, z-score             | 24x240x240 (0)       | 20x192x192        |

The pipeline (``volume_to_unit``): reorient, scale (``input_scale``), resample to
``spacing``, map intensity, pad with ``pad_value`` and centre-crop to ``pad_size``; what
is stored (``volume_to_stored``, uint16 of the window for CT, float16 z-scores for MRI)
is then cropped to ``size`` when read: training takes a random crop, evaluation a
centre crop, both after padding, so small volumes are padded rather than crashing
(the official evaluation centre-crops without padding). Sources stored as HU / 1000
(CT-RATE ``.npz``) take ``input_scale=1000``. Volumes are first turned to one
orientation (SPL: slices from inferior to superior, rows anterior to posterior,
columns right to left, i.e. the usual axial display) so that DICOM and NIfTI sources
agree (assumed; METHODS is silent).

Spacing: an anisotropic volume is resampled to the contract's spacing (trilinear);
with ``spacing`` None (the ``mri`` preset) the stored grid is kept as it is. A source
that stores no spacing (a bare ``.npy``, or an ``.npz`` without a ``spacing`` key) is
taken as 1 mm in every axis, with a warning naming the file.

``VolumePreset`` / ``VolumeTransform`` are the in-memory view of the same contracts
(one ``Volume`` -> one float32 tensor, no quantisation). MONAI is imported on first
use: it takes seconds to import.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from greenfm.data.contract import PRESETS as CONTRACT_PRESETS
from greenfm.data.contract import VOLUME_PRESETS, Contract
from greenfm.data.image_data import Volume
from greenfm.errors import ConfigError

log = logging.getLogger(__name__)

Size3 = tuple[int, int, int]
Spacing3 = tuple[float, float, float]


@dataclass(frozen=True)
class VolumePreset:
    """A volume contract's fields by their volume names; ``contract`` turns it back into a ``Contract``."""

    name: str
    spacing: Spacing3 | None  # target (z, y, x) mm; None keeps the stored grid
    intensity: str  # "hu-window" or "percentile-zscore"
    hu_range: tuple[float, float] | None  # clipped HU range, mapped linearly onto [-1, 1]
    pad_size: Size3  # (D, H, W) after symmetric padding / centre cropping
    crop_size: Size3  # (D, H, W) random (train) or centre (eval) crop
    pad_value: float
    orientation: str | None = "SPL"
    input_scale: float = 1.0  # 1000 for HU / 1000 sources

    @property
    def contract(self) -> Contract:
        fields: dict[str, Any] = {
            "bit_depth": 16, "channels": 1, "size": self.crop_size, "pad_size": self.pad_size,
            "pad_value": self.pad_value, "spacing": self.spacing, "orientation": self.orientation,
            "input_scale": None if self.input_scale == 1.0 else self.input_scale,
        }  # fmt: skip
        if self.intensity == "hu-window":
            lo, hi = self.hu_range or (-1000.0, 1000.0)
            fields |= {"modality": "ct", "windows": (((lo + hi) / 2, hi - lo),), "mean": 0.5, "std": 0.5}
        else:
            fields |= {"modality": "mri", "intensity": "percentile-zscore", "mean": 0.0, "std": 1.0}
        return Contract.from_dict(fields, source=f"volume preset {self.name}")

    @classmethod
    def from_contract(cls, name: str, contract: Contract) -> "VolumePreset":
        if not contract.is_volume:
            raise ConfigError(f"contract {name!r} is for 2-D images, not volumes")
        hu = None
        if contract.windows:
            centre, width = contract.windows[0]
            hu = (centre - width / 2, centre + width / 2)
        return cls(
            name, contract.spacing, "hu-window" if contract.windows else "percentile-zscore", hu,
            tuple(contract.stored_size), tuple(contract.size), 0.0 if contract.pad_value is None else contract.pad_value,
            contract.orientation, contract.input_scale or 1.0,
        )  # type: ignore[arg-type]  # fmt: skip


PRESETS: dict[str, VolumePreset] = {name: VolumePreset.from_contract(name, CONTRACT_PRESETS[name]) for name in VOLUME_PRESETS}


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

    ``seed`` makes the random crops reproducible (``set_random_state`` re-seeds). The
    same pipeline as the cache (``volume_to_unit``), without rounding to the stored type.
    """

    def __init__(self, preset: str | VolumePreset = "ct-chest", *, train: bool = False, seed: int | None = None, **overrides: Any):
        from monai.transforms import CenterSpatialCrop, RandSpatialCrop

        self.preset = get_preset(preset, **overrides)
        self.contract = self.preset.contract
        self.train = train
        if train:
            self.crop = RandSpatialCrop(self.preset.crop_size, random_size=False)
            self.crop.set_random_state(seed)
        else:
            self.crop = CenterSpatialCrop(self.preset.crop_size)

    def set_random_state(self, seed: int | None) -> None:
        if self.train:
            self.crop.set_random_state(seed)

    def __call__(self, volume: Volume) -> torch.Tensor:
        unit = volume_to_unit(volume, self.contract)
        mean, std = self.contract.mean[0], self.contract.std[0]
        x = (unit - mean) / std
        return _plain(self.crop(x))


# -- the contract pipeline --------------------------------------------------------------------


def volume_to_unit(volume: Volume, contract: Contract, *, source: str | None = None) -> torch.Tensor:
    """A ``Volume`` -> float32 (C, D, H, W) at ``contract.stored_size`` in stored units over ``max_value``.

    For HU windows that is [0, 1] per window (one channel each); for ``percentile-zscore`` the
    z-scores themselves. Reorient, ``input_scale``, resample to ``spacing``, intensity, then
    symmetric padding (``stored_pad_value``) / centre cropping to ``pad_size``.
    """
    from monai.transforms import ScaleIntensityRange

    if not contract.is_volume:
        raise ConfigError("volume_to_unit needs a volume contract (a 3-entry size)")
    source = source or volume.metadata.get("source")
    if contract.orientation:
        volume = reorient(volume, contract.orientation)
    if contract.input_scale:
        volume = replace(volume, array=volume.array.astype(np.float32) * np.float32(contract.input_scale))
    if contract.spacing is not None:
        if volume.metadata.get("spacing_known") is False and not volume.metadata.get("spacing_given"):
            message = f"{source or 'a volume'}: no voxel spacing stored; taken as 1 mm in every axis"
            log.warning(message)
            warnings.warn(message, stacklevel=2)
        volume = resample(volume, contract.spacing, mode="bilinear" if contract.interpolation == "bilinear" else 3)
    x = torch.as_tensor(np.ascontiguousarray(volume.array, dtype=np.float32))[None]
    if contract.intensity == "percentile-zscore":
        x = percentile_zscore(x)
    else:
        planes = []
        for centre, width in contract.windows or ():
            lo, hi = centre - width / 2.0, centre + width / 2.0
            planes.append(_plain(ScaleIntensityRange(a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)(x)))
        x = torch.cat(planes)
    return pad_or_crop(x, tuple(contract.stored_size), value=float(contract.stored_pad_value or 0.0))  # type: ignore[arg-type]


def volume_to_stored(volume: Volume, contract: Contract, *, source: str | None = None) -> np.ndarray:
    """A ``Volume`` -> what the cache stores: (C, D, H, W) uint16 (windows) or float16 (z-scores)."""
    unit = volume_to_unit(volume, contract, source=source)
    if contract.intensity == "percentile-zscore":
        return unit.numpy().astype(np.float16)
    return unit.clamp_(0.0, 1.0).mul_(contract.max_value).round_().numpy().astype(contract.dtype)


def crop_volume(
    x: torch.Tensor, size: Size3, *, train: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Crop (..., D, H, W) to ``size``: a random window when ``train`` (torch's RNG, so the
    engine's seeding and DataLoader worker seeds govern it), else the centre one.

    The volume must be at least ``size`` in every axis (the pipeline pads first).
    """
    (d, h, w), (cd, ch, cw) = crop_start(tuple(x.shape[-3:]), size, train=train, generator=generator), size
    return x[..., d : d + cd, h : h + ch, w : w + cw]


def crop_start(
    shape: Size3, size: Size3, *, train: bool, generator: torch.Generator | None = None
) -> tuple[int, int, int]:
    """The (d, h, w) corner of a ``size`` crop of a ``shape`` volume: drawn from torch's RNG
    when ``train``, else centred (what ``crop_volume`` takes)."""
    if any(s < c for s, c in zip(shape, size)):
        raise ConfigError(f"volume {tuple(shape)} is smaller than the crop {tuple(size)}; pad it first")
    if train:
        return tuple(int(torch.randint(0, s - c + 1, (1,), generator=generator)) for s, c in zip(shape, size))  # type: ignore[return-value]
    return tuple((s - c) // 2 for s, c in zip(shape, size))  # type: ignore[return-value]


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
