"""The preprocessing contract: how stored pixels become a model's input tensor.

A ``Contract`` records everything that decides what a model sees: modality,
bit depth of the stored pixels, intensity window(s), input channels,
mean/std, size, resize rule and interpolation. It is stored with every cache,
checkpoint and export, and loading compares it with ``check_compatible``.

The pixel pipeline, shared by the decoding dataset and the cache so both give
identical pixels, is ``to_contract`` (native array -> stored uint8/uint16
``(C, H, W)``) followed by ``normalize`` (stored tensor -> float32 model input).

One contract serves any number of spatial dimensions. A 3-entry ``size`` (D, H, W)
makes a volume contract (METHODS 3.6-3.7): the volume is reoriented to
``orientation``, resampled to ``spacing`` (z, y, x) mm, intensity-mapped (HU
``windows``, or ``intensity="percentile-zscore"``), padded with ``pad_value`` and
centre-cropped to ``pad_size`` (stored), and at read time cropped to ``size``:
randomly in training, at the centre in evaluation; padding always comes before
cropping, so a small volume is padded rather than refused
(``greenfm.data.volumes.volume_to_stored``). The volume fields are left out of a
2-D contract's dict, so 2-D fingerprints and caches are unchanged.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import warnings
from pathlib import Path
from typing import Any, Literal, Mapping

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from greenfm.errors import BadInputError, ConfigError

Modality = Literal["xray", "fundus", "ct", "mri", "us", "photo", "other"]
GREYSCALE_MODALITIES = frozenset({"xray", "ct", "mri", "us"})
# Fields that decide the stored (cached) pixels; mean/std and the final channel
# count are applied when a batch is read, so caches are shared across them.
PIXEL_FIELDS = (
    "bit_depth", "windows", "stored_channels", "size", "resize", "interpolation", "antialias", "source_size",
    "spacing", "orientation", "intensity", "pad_size", "stored_pad_value", "input_scale",
)  # fmt: skip
# Left out of a contract's dict (and so of its fingerprints) while unset, so contracts
# written before the field existed keep their fingerprints and caches.
OPTIONAL_FIELDS = ("source_size", "spacing", "orientation", "intensity", "pad_size", "pad_value", "input_scale",
                   "train_crop")  # fmt: skip
# Fields that only volume contracts (a 3-entry size) may set.
VOLUME_FIELDS = ("spacing", "orientation", "intensity", "pad_size", "pad_value", "input_scale", "train_crop")
_AXIS_PAIRS = ("LR", "AP", "SI")


class Contract(BaseModel):
    """Preprocessing contract; JSON-serialisable, immutable, with a stable ``fingerprint``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    modality: Modality = "other"
    bit_depth: Literal[8, 16] = 8
    """Bits of the stored (cached) pixels: 8 -> uint8, 16 -> uint16."""
    windows: tuple[tuple[float, float], ...] | None = None
    """(centre, width) pairs in native units (HU for CT); several windows -> several channels."""
    channels: Literal[1, 3] = 3
    """Model input channels; grey is repeated to 3 when ``channels == 3``."""
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    size: tuple[int, int] | tuple[int, int, int] = (224, 224)
    """(H, W) of a 2-D model input, or (D, H, W) of a volume (the crop a 3-D model sees)."""
    resize: Literal["squash", "shorter-center-crop", "letterbox"] = "squash"
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"
    antialias: bool = True
    source_size: tuple[int, int] | None = None
    """Stored (cached) size when training augmentation should run above ``size``; None stores at ``size``.

    RETFound-Green augments its 1024 px images and only then crops or resizes to 392, so
    its crops downsample; a cache stored at 392 would make the same crops upsample. With
    ``source_size`` the cache keeps that resolution, augmentation runs there and the last
    step resizes to ``size`` (``fit_to_size``; also without augmentation)."""
    spacing: tuple[float, float, float] | None = None
    """Volumes: target voxel spacing (z, y, x) mm; None keeps the stored grid."""
    orientation: str | None = None
    """Volumes: axis codes the array is turned to before anything else (``"SPL"``); None keeps it."""
    intensity: Literal["percentile-zscore"] | None = None
    """Volumes: ``percentile-zscore`` (clip to the 1st-99th percentile, z-score; stored float16);
    None maps ``windows`` (HU) onto [0, 1] as for 2-D images."""
    pad_size: tuple[int, int, int] | None = None
    """Volumes: stored (cached) (D, H, W) after symmetric padding / centre cropping; None stores at ``size``."""
    pad_value: float | None = None
    """Volumes: padding value in model-input units (-1 for the CT presets); None pads with 0."""
    input_scale: float | None = None
    """Volumes: factor applied to the stored values first (1000 for HU / 1000 sources such as CT-RATE)."""
    train_crop: Literal["random", "center"] | None = None
    """Volumes: the training crop from ``pad_size`` to ``size`` (None: random); evaluation is always centred."""

    @field_validator("size", "source_size", mode="before")
    @classmethod
    def _square_from_int(cls, v: Any) -> Any:
        return (v, v) if isinstance(v, int) else v

    @field_validator("pad_size", mode="before")
    @classmethod
    def _cube_from_int(cls, v: Any) -> Any:
        return (v, v, v) if isinstance(v, int) else v

    @model_validator(mode="before")
    @classmethod
    def _broadcast_mean_std(cls, data: Any) -> Any:
        # One mean/std value stands for every channel (``mean=0.5``).
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        channels = data.get("channels", 3)
        for name in ("mean", "std"):
            v = data.get(name)
            if isinstance(v, (int, float)):
                v = (v,)
            if isinstance(v, (list, tuple)) and len(v) == 1 and isinstance(channels, int):
                v = tuple(v) * channels
            if v is not None:
                data[name] = v
        return data

    @model_validator(mode="after")
    def _consistent(self) -> "Contract":
        if any(s < 1 for s in self.size):
            raise ValueError(f"size must be positive, got {self.size}")
        if self.is_volume:
            self._check_volume()
        else:
            given = [name for name in VOLUME_FIELDS if getattr(self, name) is not None]
            if given:
                raise ValueError(f"{', '.join(given)} apply to volumes only (a 3-entry size (D, H, W))")
        if self.source_size is not None:
            (sh, sw), (h, w) = self.source_size, self.size
            if sh < h or sw < w:
                raise ValueError(f"source_size {self.source_size} is smaller than size {self.size}")
            if abs(sh * w - sw * h) > max(sh, sw):  # the final resize must not change the aspect ratio
                raise ValueError(f"source_size {self.source_size} and size {self.size} differ in aspect ratio")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")
        for name in ("mean", "std"):
            if len(getattr(self, name)) != self.channels:
                raise ValueError(f"{name} has {len(getattr(self, name))} values for {self.channels} channel(s)")
        if self.windows is not None:
            if not self.windows:
                raise ValueError("windows is empty; leave it out for no windowing")
            if any(w <= 0 for _, w in self.windows):
                raise ValueError(f"window widths must be positive, got {self.windows}")
            if len(self.windows) not in (1, self.channels):
                n = len(self.windows)
                raise ValueError(f"{n} windows give {n} channels, but channels={self.channels}")
        return self

    def _check_volume(self) -> None:
        if self.source_size is not None:
            raise ValueError("source_size applies to 2-D images; a volume's stored size is pad_size")
        if self.pad_size is not None and any(p < s for p, s in zip(self.pad_size, self.size)):
            raise ValueError(f"pad_size {self.pad_size} is smaller than size {self.size}")
        if self.spacing is not None and any(not (s > 0) for s in self.spacing):
            raise ValueError(f"spacing must be positive, got {self.spacing}")
        if self.input_scale is not None and not self.input_scale > 0:
            raise ValueError(f"input_scale must be positive, got {self.input_scale}")
        if self.orientation is not None:
            codes = self.orientation
            if len(codes) != 3 or sorted(_AXIS_PAIRS) != sorted(
                pair for c in codes for pair in _AXIS_PAIRS if c in pair
            ):
                raise ValueError(f"orientation must name each axis once with L/R, A/P, S/I (e.g. SPL), got {codes!r}")
        if self.intensity == "percentile-zscore" and self.windows is not None:
            raise ValueError("intensity 'percentile-zscore' and windows exclude each other")
        if self.intensity is None and self.windows is None:
            raise ValueError("a volume contract needs windows (HU) or intensity 'percentile-zscore'")

    # -- derived -----------------------------------------------------------

    @property
    def ndim(self) -> int:
        """Spatial dimensions: 2 for images (H, W), 3 for volumes (D, H, W)."""
        return len(self.size)

    @property
    def is_volume(self) -> bool:
        return len(self.size) == 3

    @property
    def stored_pad_value(self) -> float | None:
        """Volumes: the padding in stored units (what the cache holds), from ``pad_value``, mean and std."""
        if not self.is_volume:
            return None
        value = 0.0 if self.pad_value is None else self.pad_value * self.std[0] + self.mean[0]
        if self.intensity is None:
            value = min(max(value, 0.0), 1.0)
        return value

    @property
    def greyscale(self) -> bool:
        """True for grey modalities (and any one-channel image): no colour augmentation."""
        return self.modality in GREYSCALE_MODALITIES or self.stored_channels == 1

    @property
    def stored_channels(self) -> int:
        """Channels kept in the cache: windows, else 1 for grey modalities, else ``channels``.

        Grey images are stored once and repeated to ``channels`` when read: a
        third of the disk and I/O of storing three identical planes.
        """
        if self.windows is not None:
            return len(self.windows)
        return 1 if self.modality in GREYSCALE_MODALITIES else self.channels

    @property
    def stored_size(self) -> tuple[int, ...]:
        """(H, W) of the stored (cached) pixels: ``source_size`` when set, else ``size``; (D, H, W) ``pad_size`` for volumes."""
        if self.is_volume:
            return self.pad_size or self.size
        return self.source_size or self.size

    @property
    def max_value(self) -> int:
        """The stored value of intensity 1.0: 255, 65535, or 1 for float16 z-scores."""
        if self.intensity == "percentile-zscore":
            return 1
        return 255 if self.bit_depth == 8 else 65535

    @property
    def dtype(self) -> np.dtype:
        if self.intensity == "percentile-zscore":
            return np.dtype(np.float16)  # unbounded z-scores: float16 keeps ~3 significant digits
        return np.dtype(np.uint8 if self.bit_depth == 8 else np.uint16)

    @property
    def fingerprint(self) -> str:
        """sha256 (16 hex digits) of the canonical JSON of every field."""
        return _digest(self.to_dict())

    @property
    def pixel_fingerprint(self) -> str:
        """Fingerprint of only the fields that decide the stored pixels (keys caches)."""
        return _digest(self.pixel_dict())

    def pixel_dict(self) -> dict[str, Any]:
        full = self.to_dict() | {"stored_channels": self.stored_channels}
        if self.is_volume:  # the padding a cache holds depends on mean/std too
            full["stored_pad_value"] = self.stored_pad_value
        return {k: full[k] for k in PIXEL_FIELDS if k in full}

    # -- serialisation -----------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = json.loads(self.model_dump_json())
        return {k: v for k, v in data.items() if not (k in OPTIONAL_FIELDS and v is None)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | None = None) -> "Contract":
        try:
            return cls.model_validate(dict(data))
        except ValidationError as err:
            raise ConfigError(_one_line(err, source or "contract")) from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def replace(self, **changes: Any) -> "Contract":
        """A validated copy with some fields changed (``size=256`` means 256x256)."""
        return Contract.from_dict(self.to_dict() | changes)


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

PRESETS: dict[str, Contract] = {
    # RETFound-Green's export contract: Resize((392, 392), antialias) -> [0, 1] -> Normalize(0.5, 0.5).
    "rfg": Contract(modality="fundus", size=392, resize="squash", interpolation="bilinear", mean=0.5, std=0.5),
    # timm's usual ImageNet evaluation: bicubic, shorter side then centre crop.
    "imagenet": Contract(modality="photo", size=224, resize="shorter-center-crop", interpolation="bicubic",
                         mean=IMAGENET_MEAN, std=IMAGENET_STD),
    # MED-PEFT / MRM evaluation: Resize(224) + CenterCrop(224), grey -> 3 channels, 0.4978 / 0.2449.
    "cxr-medpeft": Contract(modality="xray", size=224, resize="shorter-center-crop", interpolation="bilinear",
                            mean=0.4978, std=0.2449),
    # OpenAI CLIP: bicubic, shorter side then centre crop, CLIP's own mean/std.
    "clip": Contract(modality="photo", size=224, resize="shorter-center-crop", interpolation="bicubic",
                     mean=CLIP_MEAN, std=CLIP_STD),
    # Volumes (METHODS 3.6-3.7), sizes (D, H, W), spacing (z, y, x) mm. HU windows map onto [0, 1]
    # (stored uint16) and mean = std = 0.5 onto [-1, 1]: chest [-1000, 200] -> (HU + 400) / 600,
    # abdomen [-1000, 1000] -> HU / 1000. Padding -1 (chest assumed), always before cropping.
    "ct-chest": Contract(modality="ct", bit_depth=16, windows=((-400.0, 1200.0),), channels=1, mean=0.5, std=0.5,
                         size=(96, 192, 192), spacing=(3.0, 1.5, 1.5), orientation="SPL", pad_size=(120, 240, 240),
                         pad_value=-1.0),
    "ct-abdomen": Contract(modality="ct", bit_depth=16, windows=((0.0, 2000.0),), channels=1, mean=0.5, std=0.5,
                           size=(144, 224, 224), spacing=(3.0, 1.5, 1.5), orientation="SPL",
                           pad_size=(180, 280, 280), pad_value=-1.0),
    # MRI: per-volume 1st-99th percentile clip and z-score (stored float16), grid as stored.
    "mri": Contract(modality="mri", bit_depth=16, intensity="percentile-zscore", channels=1, mean=0.0, std=1.0,
                    size=(20, 192, 192), orientation="SPL", pad_size=(24, 240, 240), pad_value=0.0),
}  # fmt: skip
VOLUME_PRESETS = ("ct-chest", "ct-abdomen", "mri")


def get_contract(name_or_path: str | Path | Contract, *, size: int | tuple[int, ...] | None = None) -> Contract:
    """A preset by name, or a contract JSON file; ``size`` overrides the preset's size.

    A JSON file holds a whole contract (``{"contract": {...}}`` or the fields alone), or
    names a ``preset`` and the fields to change, e.g. smaller volume crops:
    ``{"preset": "ct-chest", "size": [32, 64, 64], "pad_size": [40, 80, 80]}``.
    """
    if isinstance(name_or_path, Contract):
        contract = name_or_path
    elif str(name_or_path) in PRESETS:
        contract = PRESETS[str(name_or_path)]
    elif str(name_or_path).endswith(".json"):
        path = Path(name_or_path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise BadInputError(f"cannot read contract ({err})", source=str(path)) from None
        if not isinstance(data, dict):
            raise BadInputError("a contract file holds a JSON object", source=str(path))
        data = data.get("contract", data)
        if isinstance(data, dict) and "preset" in data:
            base = str(data["preset"])
            if base not in PRESETS:
                raise ConfigError(f"{path}: unknown preset {base!r}; choose one of {', '.join(PRESETS)}")
            data = PRESETS[base].to_dict() | {k: v for k, v in data.items() if k != "preset"}
        contract = Contract.from_dict(data, source=str(path))
    else:
        raise ConfigError(f"unknown contract {str(name_or_path)!r}; choose one of {', '.join(PRESETS)} or a .json file")
    if size is not None and contract.is_volume and (isinstance(size, int) or len(size) != 3):
        raise ConfigError(f"{name_or_path} is a volume contract: give its size (D, H, W) in a contract file "
                          '({"preset": "ct-chest", "size": [D, H, W], "pad_size": [D, H, W]})')
    return contract.replace(size=size) if size is not None else contract


def check_compatible(
    expected: Contract | Mapping[str, Any],
    found: Contract | Mapping[str, Any],
    what: str,
    *,
    fields: tuple[str, ...] | None = None,
) -> None:
    """Raise a one-line ``ContractMismatchError`` naming every differing field.

    ``what`` names the thing being loaded (``"checkpoint runs/x/last.ckpt"``);
    ``fields`` limits the comparison (``PIXEL_FIELDS`` for caches).
    """
    a, b = _every_field(_as_contract(expected, what)), _every_field(_as_contract(found, what))
    names = fields or tuple(k for k in a if k not in ("stored_channels", "stored_pad_value"))
    diffs = [f"{k} {_show(b[k])} (expected {_show(a[k])})" for k in names if not _same(a[k], b[k])]
    if diffs:
        raise ContractMismatchError(f"{what}: preprocessing contract differs: {'; '.join(diffs)}")


class ContractMismatchError(ConfigError):
    """A checkpoint, export or cache was made with a different preprocessing contract."""


# -- the pixel pipeline ------------------------------------------------------


def to_contract(
    image: np.ndarray,
    contract: Contract,
    *,
    bits_stored: int | None = None,
    source: str | None = None,
) -> np.ndarray:
    """Native image (H, W) or (H, W, C) -> stored pixels (``stored_channels``, H, W), uint8 or uint16.

    Intensity first (windows in native units; else unsigned integers scaled by
    ``bits_stored`` or their dtype's range; floats already in [0, 1] kept;
    anything else min-max scaled per image), then channels, then the resize
    rule in float32, then rounding to the contract's bit depth. 8-bit images
    under an 8-bit contract without windows are resized as bytes directly.
    """
    if contract.is_volume:
        raise BadInputError("the contract is for 3-D volumes; decode volumes with greenfm.data.volumes", source=source)
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)) or 0 in arr.shape:
        raise BadInputError(f"expected an (H, W) or (H, W, 3|4) image, got shape {arr.shape}", source=source)
    if arr.ndim == 3:
        arr = arr[..., :3]  # drop alpha
    channels = 1 if arr.ndim == 2 else 3
    if (arr.dtype == np.uint8 and contract.bit_depth == 8 and contract.windows is None
            and bits_stored in (None, 8) and channels in (1, contract.stored_channels)):
        # 8-bit in, 8-bit out: resize the bytes directly (torchvision's SIMD uint8
        # path, ~6x faster than float32 for large colour images), repeat grey after.
        x = torch.from_numpy(np.array(arr[None] if channels == 1 else arr.transpose(2, 0, 1), order="C"))
        out = _resize(x, contract).numpy()
        if len(out) != contract.stored_channels:
            out = np.repeat(out, contract.stored_channels, axis=0)
        return np.ascontiguousarray(out)

    unit = _to_unit(arr, contract, bits_stored, source)  # float32 (C, h, w) in [0, 1]
    unit = _match_channels(unit, contract.stored_channels)
    resized = _resize(torch.from_numpy(unit), contract)
    scaled = resized.clamp_(0.0, 1.0).mul_(contract.max_value).round_()
    return scaled.numpy().astype(contract.dtype)


def fit_to_size(pixels: torch.Tensor, contract: Contract) -> torch.Tensor:
    """Stored pixels (..., H, W) at ``source_size`` -> the contract's ``size``; unchanged when already there.

    The last step of the pixel pipeline when the cache keeps a source resolution:
    augmentation (which ends at ``size`` itself) or, without it, this plain resize
    with the contract's interpolation and antialiasing (same aspect ratio, checked).
    """
    if tuple(pixels.shape[-2:]) == tuple(contract.size):
        return pixels
    mode = InterpolationMode.BICUBIC if contract.interpolation == "bicubic" else InterpolationMode.BILINEAR
    return TF.resize(pixels, list(contract.size), interpolation=mode, antialias=contract.antialias)


def normalize(pixels: torch.Tensor | np.ndarray, contract: Contract) -> torch.Tensor:
    """Stored pixels (C, H, W) or (B, C, H, W), uint8/uint16 -> float32 model input.

    Scales by the bit depth, subtracts ``mean`` and divides by ``std`` per
    channel; one stored channel is normalised once and repeated to
    ``contract.channels`` as a view (batch collation makes it contiguous).
    Volumes are (C, D, H, W) or (B, C, D, H, W) (float16 for z-scored MRI).
    """
    x = torch.as_tensor(pixels)
    if x.dtype == torch.uint16:  # few CPU kernels accept uint16; the values fit in int32
        x = x.to(torch.int32)
    nd = contract.ndim
    c = x.shape[-nd - 1]
    if c not in (1, contract.channels):
        raise ConfigError(f"stored pixels have {c} channels, the contract wants {contract.channels}")
    scale, shift = _affine(contract)  # x * scale - shift == (x / max - mean) / std
    if c == 1 and contract.channels > 1 and bool((scale == scale[0]).all() and (shift == shift[0]).all()):
        y = x.to(torch.float32).mul_(scale[0]).sub_(shift[0])
        return y.expand(*x.shape[: -nd - 1], contract.channels, *x.shape[-nd:])
    if c == len(scale):  # in place on the converted copy: the same values, one pass less memory
        return x.to(torch.float32, copy=True).mul_(scale).sub_(shift)
    return x.to(torch.float32) * scale - shift


@functools.lru_cache(maxsize=32)
def _affine(contract: Contract) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (-1,) + (1,) * contract.ndim
    mean = torch.tensor(contract.mean, dtype=torch.float64).view(shape)
    std = torch.tensor(contract.std, dtype=torch.float64).view(shape)
    return (1.0 / (contract.max_value * std)).float(), (mean / std).float()


def normalized_range(contract: Contract) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (low, high) of the model input: where 0 and 1 land after mean/std."""
    mean, std = np.asarray(contract.mean), np.asarray(contract.std)
    return (0.0 - mean) / std, (1.0 - mean) / std


def check_first_batch(x: torch.Tensor, contract: Contract, *, what: str = "first batch") -> str | None:
    """Warn when a batch's intensity range does not look normalised per the contract.

    Catches the usual slips (pixels left in 0-255 or 0-65535, or scaled to
    [0, 1] but never mean/std-normalised). Returns the warning text, or None.
    """
    x = torch.as_tensor(x).detach()
    if contract.intensity == "percentile-zscore" and x.is_floating_point():
        return None  # z-scores have no fixed range to check against
    if not x.is_floating_point():
        message = f"{what} is {x.dtype}, not float: was it normalised per the contract?"
        warnings.warn(message, stacklevel=2)
        return message
    x = x.float()
    lo, hi = float(x.min()), float(x.max())
    exp_lo, exp_hi = (float(v) for v in (normalized_range(contract)[0].min(), normalized_range(contract)[1].max()))
    span = exp_hi - exp_lo
    message = None
    if hi > exp_hi + 0.5 * span:
        message = (f"{what} ranges {lo:.3g}..{hi:.3g}, far above the normalised range {exp_lo:.3g}..{exp_hi:.3g}: "
                   "pixels look unscaled (0-255 or 0-65535)")
    elif lo < exp_lo - 0.5 * span:
        message = f"{what} ranges {lo:.3g}..{hi:.3g}, far below the normalised range {exp_lo:.3g}..{exp_hi:.3g}"
    elif exp_lo < -0.1 and lo >= 0.0 and hi <= 1.0 and hi > lo:
        message = (f"{what} lies within [0, 1] ({lo:.3g}..{hi:.3g}) but mean/std normalisation to "
                   f"{exp_lo:.3g}..{exp_hi:.3g} was expected")
    if message:
        warnings.warn(message, stacklevel=2)
    return message


# -- helpers -----------------------------------------------------------------


def _to_unit(arr: np.ndarray, contract: Contract, bits_stored: int | None, source: str | None) -> np.ndarray:
    if contract.windows is not None:
        if arr.ndim != 2:
            raise BadInputError(f"windows need a single-channel image, got shape {arr.shape}", source=source)
        native = arr.astype(np.float32, copy=False)
        planes = [np.clip((native - (c - w / 2.0)) / w, 0.0, 1.0) for c, w in contract.windows]
        return np.stack(planes).astype(np.float32, copy=False)
    if arr.dtype == np.bool_:
        unit = arr.astype(np.float32)
    elif np.issubdtype(arr.dtype, np.unsignedinteger):
        bits = bits_stored or arr.dtype.itemsize * 8
        unit = arr.astype(np.float32) / float(2**bits - 1)
    else:
        unit = arr.astype(np.float32, copy=False)
        lo, hi = float(np.nanmin(unit)), float(np.nanmax(unit))
        if not (np.issubdtype(arr.dtype, np.floating) and lo >= 0.0 and hi <= 1.0):
            # Signed or out-of-range values with no window: min-max per image.
            unit = (unit - lo) / (hi - lo) if hi > lo else np.zeros_like(unit)
        unit = np.nan_to_num(unit, nan=0.0)
    unit = np.clip(unit, 0.0, 1.0)
    return unit[None] if unit.ndim == 2 else np.ascontiguousarray(unit.transpose(2, 0, 1))


def _match_channels(unit: np.ndarray, channels: int) -> np.ndarray:
    c = unit.shape[0]
    if c == channels:
        return unit
    if c == 1:
        return np.repeat(unit, channels, axis=0)
    if c == 3 and channels == 1:
        # ITU-R 601-2 luma, the weights PIL's convert("L") uses.
        return np.tensordot(np.array([0.299, 0.587, 0.114], dtype=np.float32), unit, axes=1)[None]
    raise ConfigError(f"cannot map {c} channels to {channels}")


def _resize(x: torch.Tensor, contract: Contract) -> torch.Tensor:
    out_h, out_w = contract.stored_size
    h, w = x.shape[-2:]
    mode = InterpolationMode.BICUBIC if contract.interpolation == "bicubic" else InterpolationMode.BILINEAR

    def scaled(new_h: int, new_w: int) -> torch.Tensor:
        if (new_h, new_w) == (h, w):
            return x
        return TF.resize(x, [new_h, new_w], interpolation=mode, antialias=contract.antialias)

    if contract.resize == "squash":
        return scaled(out_h, out_w)
    if contract.resize == "shorter-center-crop":
        s = max(out_h / h, out_w / w)
        y = scaled(max(out_h, round(h * s)), max(out_w, round(w * s)))
        return TF.center_crop(y, [out_h, out_w])
    s = min(out_h / h, out_w / w)  # letterbox: fit inside, pad with black
    y = scaled(max(1, min(out_h, round(h * s))), max(1, min(out_w, round(w * s))))
    top, left = (out_h - y.shape[-2]) // 2, (out_w - y.shape[-1]) // 2
    return TF.pad(y, [left, top, out_w - y.shape[-1] - left, out_h - y.shape[-2] - top], fill=0)


def _every_field(contract: Contract) -> dict[str, Any]:
    """Every field, unset optional ones included, ``stored_channels`` and ``stored_pad_value``: what comparisons see."""
    return json.loads(contract.model_dump_json()) | {"stored_channels": contract.stored_channels,
                                                     "stored_pad_value": contract.stored_pad_value}


def _as_contract(c: Contract | Mapping[str, Any], what: str) -> Contract:
    return c if isinstance(c, Contract) else Contract.from_dict(c, source=what)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        numbers = isinstance(a, (int, float)) and isinstance(b, (int, float))
        return numbers and math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return a == b


def _show(v: Any) -> str:
    if isinstance(v, list):
        return "(" + ", ".join(_show(x) for x in v) + ")"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _digest(data: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _one_line(err: ValidationError, what: str) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        parts.append(f"{loc}: {e['msg']}" if loc else e["msg"])
    return f"{what}: invalid contract: {'; '.join(parts)}"
