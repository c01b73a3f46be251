"""DICOM files: one image in modality units, a multi-frame volume.

Pixel values go through the DICOM display pipeline with pydicom's own
functions: the modality transform (``apply_modality_lut``: rescale slope and
intercept or a Modality LUT, so CT comes out in Hounsfield units), optionally
the VOI transform (``apply_voi_lut``: the file's VOI LUT or window), and
MONOCHROME1 images are inverted so that high values are bright everywhere.
Reading and checking the header (the cheap probe, the decode budget) is in
``dicom_header.py``; series folders (one file per slice) are in ``dicom_series.py``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

from greenfm.data.arrays import first_line
from greenfm.data.dicom_header import (  # noqa: F401 - re-exported: callers import the header API from here
    NOT_DICOM,
    PIXEL_TAGS,
    check_dicom_size,
    check_has_pixels,
    check_pixel_data,
    expects_pixels,
    has_preamble,
    header_text,
    number_of_frames,
    probe_dicom,
    read_file,
    read_header,
)
from greenfm.data.image_data import ImageData, Volume
from greenfm.errors import BadInputError

GREY = ("MONOCHROME1", "MONOCHROME2")
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def read_dicom_image(
    path: Path,
    *,
    frame: int | None = None,
    window: str | tuple[float, float] | None = None,
    invert_monochrome1: bool = True,
    max_decode_bytes: int | None = None,
) -> ImageData:
    """One DICOM image (H, W) or (H, W, 3) in modality units, or windowed to [0, 1].

    ``window``: None, ``"dicom"`` (the file's VOI LUT or first window) or
    ``(centre, width)`` in modality units. Multi-frame files need ``frame``.
    """
    header = read_header(path)
    n_frames = number_of_frames(header)
    if n_frames > 1 and frame is None:
        raise BadInputError(f"has {n_frames} frames; pass frame= to pick one, or use read_volume", source=str(path))
    if frame is not None and not 0 <= frame < n_frames:
        raise BadInputError(f"frame {frame} is out of range for {n_frames} frame(s)", source=str(path))
    check_has_pixels(header, path)
    check_dicom_size(header, path, frames=1 if n_frames > 1 else None, max_decode_bytes=max_decode_bytes)
    check_pixel_data(header, path)
    ds = read_dataset(path, probe=False)
    stored = decode_pixels(ds, path, index=frame if n_frames > 1 else None)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    metadata: dict[str, Any] = {
        "format": "dicom",
        "bits_stored": int(ds.get("BitsStored", 0) or 0) or None,
        "spacing": pixel_spacing(ds),
        "modality": str(ds.get("Modality", "")),
        "stored_photometric": photometric,
        "frames": n_frames,
        "rescaled": False,
        "window": None,
    }
    if photometric not in GREY:
        array = apply_color_lut(stored, ds) if photometric == "PALETTE COLOR" else stored
        metadata["photometric"] = "RGB" if array.ndim == 3 else photometric
        if photometric == "PALETTE COLOR":
            metadata["bits_stored"] = None  # palette entries are 8 or 16 bit, unrelated to Bits Stored
        if window is not None:
            raise BadInputError(f"window= needs a grey image, not {header_text(photometric)}", source=str(path))
        return ImageData(array, metadata)

    values, metadata["rescaled"] = modality_values(stored, ds, frame)
    if metadata["rescaled"] or window is not None:
        metadata["bits_stored"] = None  # values are no longer stored integers
    if window is not None:
        values = _windowed(values, ds, window, path)
        metadata["window"] = "dicom" if window == "dicom" else tuple(float(v) for v in window)  # type: ignore[union-attr]
    if photometric == "MONOCHROME1" and invert_monochrome1:
        values = 1.0 - values if window is not None else _invert(values, ds)
    metadata["photometric"] = "MONOCHROME2" if invert_monochrome1 else photometric
    return ImageData(values, metadata)


def read_dicom_multiframe(path: Path, *, max_decode_bytes: int | None = None) -> Volume:
    """A multi-frame (or single-frame) grey DICOM file as a volume (D, H, W) in modality units."""
    header = read_header(path)
    check_has_pixels(header, path)
    check_dicom_size(header, path, volume=True, max_decode_bytes=max_decode_bytes)
    check_pixel_data(header, path)
    ds = read_dataset(path, probe=False)
    if str(ds.get("PhotometricInterpretation", "")) not in GREY:
        raise BadInputError(f"a volume must be grey, not {header_text(ds.get('PhotometricInterpretation'))}", source=str(path))
    stored = decode_pixels(ds, path)
    n = number_of_frames(ds)
    stored = stored.reshape(n, *stored.shape[-2:])
    values, rescaled = modality_values(stored, ds, None)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        values = _invert(values, ds)
    rows, cols = orientation_vectors(ds)
    positions = _frame_positions(ds, n)
    step = _frame_step(ds, positions, np.cross(rows, cols))
    if positions is not None:
        order = np.argsort(positions @ np.cross(rows, cols), kind="stable")
        values, positions = values[order], positions[order]
    origin = positions[0] if positions is not None else np.asarray(ds.get("ImagePositionPatient", [0, 0, 0]), float)
    dy, dx = pixel_spacing(ds) or (1.0, 1.0)
    affine = lps_affine(origin, rows, cols, step, dy, dx)
    metadata = header_summary(ds) | {"format": "dicom", "frames": n, "rescaled": rescaled}
    return Volume(values, (float(np.linalg.norm(step)), dy, dx), affine, metadata)


# --- shared helpers (also used by dicom_series) --------------------------------------------


def read_dataset(path: Path, *, probe: bool = True) -> Dataset:
    """The full dataset (pixel data included), after the probe's checks unless already done."""
    if probe:
        probe_dicom(path)
    return read_file(path)


def decode_pixels(ds: Dataset, path: Path, index: int | None = None) -> np.ndarray:
    """Stored pixel values (colour converted to RGB by pydicom); BadInputError on failure."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.pixels.pixel_array(ds, index=index)
    except Exception as err:  # decoders raise ValueError, RuntimeError, NotImplementedError...
        raise BadInputError(f"cannot decode DICOM pixel data ({first_line(err)})", source=str(path)) from None


def modality_values(stored: np.ndarray, ds: Dataset, frame: int | None) -> tuple[np.ndarray, bool]:
    """Apply the modality transform; integers stay integers when slope and intercept are whole.

    Returns (values, whether a transform was applied). Enhanced multi-frame files
    keep rescale parameters in functional groups, which pydicom does not read.
    """
    if ds.get("ModalityLUTSequence"):
        return apply_modality_lut(stored, ds), True
    slope, intercept = rescale_parameters(ds, frame, len(stored) if stored.ndim == 3 else 1)
    if np.all(slope == 1.0) and np.all(intercept == 0.0):
        return stored, False
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        values = apply_modality_lut(stored, ds)
    else:
        shape = (-1, 1, 1) if stored.ndim == 3 else ()
        values = stored * np.reshape(slope, shape) + np.reshape(intercept, shape)
    if np.all(slope == np.round(slope)) and np.all(intercept == np.round(intercept)):
        return np.rint(values).astype(np.int64), True
    return values.astype(np.float32), True


def rescale_parameters(ds: Dataset, frame: int | None, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Slope and intercept (one per frame for enhanced multi-frame files)."""
    if "RescaleSlope" in ds or "RescaleIntercept" in ds:
        return np.array([float(ds.get("RescaleSlope", 1) or 1)]), np.array([float(ds.get("RescaleIntercept", 0) or 0)])
    shared = _group_rescale(ds.get("SharedFunctionalGroupsSequence"), 0)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    frames = [frame] if frame is not None else range(n_frames)
    pairs = [_group_rescale(per_frame, i) or shared or (1.0, 0.0) for i in frames]
    return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    """(row, column) spacing in mm: Pixel Spacing, else Imager Pixel Spacing, else functional groups."""
    value = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    if value is None:
        shared = ds.get("SharedFunctionalGroupsSequence")
        measures = shared[0].get("PixelMeasuresSequence") if shared else None
        value = measures[0].get("PixelSpacing") if measures else None
    if value is None or len(value) != 2:
        return None
    return float(value[0]), float(value[1])


def orientation_vectors(ds: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors (LPS) along a row and along a column; axial when absent."""
    iop = ds.get("ImageOrientationPatient")
    if iop is None:
        shared = ds.get("SharedFunctionalGroupsSequence")
        plane = shared[0].get("PlaneOrientationSequence") if shared else None
        iop = plane[0].get("ImageOrientationPatient") if plane else None
    if iop is None or len(iop) != 6:
        return np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    v = np.asarray([float(x) for x in iop])
    return v[:3] / np.linalg.norm(v[:3]), v[3:] / np.linalg.norm(v[3:])


def lps_affine(origin, rows: np.ndarray, cols: np.ndarray, step: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """Voxel (d, h, w) -> RAS mm. ``h`` runs down a column, ``w`` along a row (DICOM is LPS)."""
    affine = np.eye(4)
    affine[:3, 0] = step
    affine[:3, 1] = cols * dy
    affine[:3, 2] = rows * dx
    affine[:3, 3] = np.asarray(origin, float)
    return _LPS_TO_RAS @ affine


def header_summary(ds: Dataset) -> dict[str, Any]:
    """Identifiers and descriptions worth carrying into a manifest."""
    keys = {"PatientID": "patient_id", "StudyInstanceUID": "study_uid", "SeriesInstanceUID": "series_uid",
            "Modality": "modality", "SeriesDescription": "series_description"}  # fmt: skip
    return {out: str(ds.get(key, "") or "") for key, out in keys.items()}


def _windowed(values: np.ndarray, ds: Dataset, window, path: Path) -> np.ndarray:
    """VOI transform -> float32 in [0, 1]."""
    if isinstance(window, str):
        if window != "dicom":
            raise BadInputError(f"window must be 'dicom' or (centre, width), not {window!r}", source=str(path))
        if ds.get("VOILUTSequence"):
            descriptor = ds.VOILUTSequence[0].LUTDescriptor
            reference = np.arange(int(descriptor[1]), int(descriptor[1]) + (int(descriptor[0]) or 65536))
            out, ref = apply_voi_lut(np.rint(values).astype(np.int64), ds), apply_voi_lut(reference, ds)
        elif "WindowCenter" in ds and "WindowWidth" in ds:
            with np.errstate(over="ignore"):  # the extremes below saturate a SIGMOID window
                out, ref = apply_voi_lut(values.astype(np.float64), ds), apply_voi_lut(np.array([-1e30, 1e30]), ds)
        else:
            raise BadInputError("has no VOI LUT or window to apply; pass window=(centre, width)", source=str(path))
        lo, hi = float(ref.min()), float(ref.max())
        return ((out - lo) / max(hi - lo, 1e-12)).astype(np.float32)
    centre, width = (float(v) for v in window)
    if width <= 0:
        raise BadInputError(f"window width must be positive, not {width}", source=str(path))
    # A linear window given by the caller: pydicom only applies windows stored in the dataset.
    return np.clip((values - (centre - width / 2)) / width, 0.0, 1.0).astype(np.float32)


def _invert(values: np.ndarray, ds: Dataset) -> np.ndarray:
    """MONOCHROME1 -> MONOCHROME2 within the range the stored bits can reach."""
    bits = int(ds.get("BitsStored", 16) or 16)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    extremes = np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1] if signed else [0, 2**bits - 1])
    mapped, _ = modality_values(extremes, ds, 0 if number_of_frames(ds) > 1 else None)
    total = mapped.min() + mapped.max()
    if values.dtype.kind in "ui":
        return (int(total) - values.astype(np.int64)).astype(values.dtype if values.dtype.kind == "u" else np.int64)
    return (total - values).astype(np.float32)


def _frame_positions(ds: Dataset, n: int) -> np.ndarray | None:
    """Per-frame Image Position (Patient): enhanced functional groups, or RT Dose grid offsets."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame and len(per_frame) == n:
        try:
            return np.array([[float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient] for item in per_frame])
        except (AttributeError, IndexError, TypeError):
            pass
    offsets = ds.get("GridFrameOffsetVector")
    if offsets is not None and len(offsets) == n and "ImagePositionPatient" in ds:
        rows, cols = orientation_vectors(ds)
        origin = np.array([float(v) for v in ds.ImagePositionPatient])
        return origin + np.outer([float(o) for o in offsets], np.cross(rows, cols))
    return None


def _frame_step(ds: Dataset, positions: np.ndarray | None, normal: np.ndarray) -> np.ndarray:
    if positions is not None and len(positions) > 1:
        along = np.sort(positions @ normal)
        return normal * float(np.median(np.diff(along)))
    thickness = ds.get("SpacingBetweenSlices") or ds.get("SliceThickness") or 1.0
    return normal * float(thickness)


def _group_rescale(groups, index: int) -> tuple[float, float] | None:
    if not groups or index >= len(groups):
        return None
    seq = groups[index].get("PixelValueTransformationSequence")
    if not seq:
        return None
    return float(seq[0].get("RescaleSlope", 1) or 1), float(seq[0].get("RescaleIntercept", 0) or 0)


