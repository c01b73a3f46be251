"""Read medical images and volumes, choosing the reader by content, then extension.

- ``probe(path)``: a cheap validity check (magic bytes and headers, no pixel
  decoding) that raises ``BadInputError`` naming the file; the manifest loader
  calls it on every row.
- ``read_image(path) -> ImageData``: one 2-D image, (H, W) or (H, W, C), from
  PNG / JPEG / TIFF (8 or 16 bit, grey or RGB), DICOM, a single-slice NIfTI or
  NRRD, or an ``.npz`` / ``.npy`` array.
- ``read_volume(path) -> Volume``: a 3-D volume (D, H, W) from NIfTI, NRRD, a
  DICOM series folder, a multi-frame DICOM file or an ``.npz`` / ``.npy`` array.

Pixels keep their type where it is one of uint8, uint16, int16 or float32 and
are otherwise converted losslessly or refused (see ``greenfm.data.arrays``).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from greenfm.data.arrays import (
    check_array_header,
    checked_array,
    checked_image_array,
    checked_volume_array,
    first_line,
    load_array,
    photometric_of,
    probe_numpy,
)
from greenfm.data.image_data import ImageData, Volume
from greenfm.data.raster import probe_raster, read_raster
from greenfm.errors import BadInputError, GreenfmError

__all__ = [
    "ImageData", "Volume", "probe", "read_image", "read_volume", "sniff_format",
    "checked_array", "checked_image_array", "checked_volume_array", "check_array_header", "first_line", "load_array",
]  # fmt: skip

SUPPORTED = "PNG, JPEG, TIFF, DICOM (file or series folder), NIfTI, NRRD, NPZ/NPY"

_PIL_FORMATS = ("png", "jpeg", "tiff")
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),
    (b"MM\x00+", "tiff"),
    (b"NRRD", "nrrd"),
    (b"\x93NUMPY", "npy"),
)
_EXTENSIONS = {
    ".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".tif": "tiff", ".tiff": "tiff",
    ".dcm": "dicom", ".dicom": "dicom", ".ima": "dicom",
    ".nii": "nifti", ".nii.gz": "nifti", ".nrrd": "nrrd", ".nhdr": "nrrd",
    ".npz": "npz", ".npy": "npy",
}  # fmt: skip


def sniff_format(path: str | Path) -> str:
    """The format of ``path`` from its magic bytes, else its extension.

    One of ``png jpeg tiff dicom dicom-series nifti nrrd npz npy``; raises
    ``BadInputError`` when missing or not one of them.
    """
    path = Path(path)
    if path.is_dir():
        return "dicom-series"
    if not path.exists():
        raise BadInputError("file not found", source=str(path))
    try:
        with open(path, "rb") as f:
            head = f.read(352)
    except OSError as err:
        raise BadInputError(f"unreadable ({err.strerror or err})", source=str(path)) from None
    if not head:
        raise BadInputError("file is empty", source=str(path))
    if head[128:132] == b"DICM":  # first: a DICOM preamble may itself hold a TIFF header
        return "dicom"
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if head[344:348] in (b"n+1\x00", b"ni1\x00") or head[4:8] == b"n+2\x00":
        return "nifti"
    ext = _extension(path)
    if head.startswith(b"\x1f\x8b") and ext == ".nii.gz":
        return "nifti"
    if head.startswith(b"PK\x03\x04") and ext == ".npz":
        return "npz"
    if ext in (".dcm", ".dicom", ".ima"):  # DICOM without the 128-byte preamble
        return "dicom"
    if ext in _EXTENSIONS:
        raise BadInputError(f"content is not valid {_EXTENSIONS[ext].upper()} (wrong magic bytes)", source=str(path))
    raise BadInputError(f"unsupported or unrecognised file format (supported: {SUPPORTED})", source=str(path))


def _one_line_errors(reader):
    """Any exception a library raises on a malformed file becomes a one-line BadInputError naming it.

    The readers catch the failures they know; this is the net under them, so that
    one hostile file never stops a whole manifest with a traceback. Its message
    says "unexpected error", which the fuzz harness counts as a finding to fix.
    """

    @functools.wraps(reader)
    def wrapped(path, *args, **kwargs):
        try:
            return reader(path, *args, **kwargs)
        except GreenfmError:
            raise
        except MemoryError:
            raise BadInputError(
                "ran out of memory while decoding (lower GREENFM_MAX_DECODE_BYTES or the worker count)", source=str(path)
            ) from None
        except Exception as err:
            raise BadInputError(
                f"unexpected error while reading ({type(err).__name__}: {first_line(err)[:200]})", source=str(path)
            ) from err

    return wrapped


@_one_line_errors
def probe(path: str | Path, *, max_decode_bytes: int | None = None) -> None:
    """Cheaply check that ``path`` is an image or volume greenfm can read.

    Reads magic bytes and headers only (a DICOM header with the pixel data
    deferred, a NIfTI header, PNG chunk checksums), never decodes pixels. Raises
    ``BadInputError("<path>: <why>")`` for a missing, corrupt, truncated or
    unsupported file, or one whose header declares more pixels than the decode
    budget allows (see ``greenfm.data.decode_budget``).
    """
    path = Path(path)
    fmt = sniff_format(path)
    budget = {"max_decode_bytes": max_decode_bytes}
    if fmt in _PIL_FORMATS:
        probe_raster(path, **budget)
    elif fmt == "dicom":
        from greenfm.data.dicom import probe_dicom

        probe_dicom(path, **budget)
    elif fmt == "dicom-series":
        from greenfm.data.dicom_series import probe_dicom_folder

        probe_dicom_folder(path, **budget)
    elif fmt in ("nifti", "nrrd"):
        from greenfm.data.volume_files import probe_nifti, probe_nrrd

        (probe_nifti if fmt == "nifti" else probe_nrrd)(path, **budget)
    else:
        probe_numpy(path, fmt, **budget)


@_one_line_errors
def read_image(
    path: str | Path,
    *,
    frame: int | None = None,
    window: str | tuple[float, float] | None = None,
    key: str | None = None,
    index: int | None = None,
    nan_fill: float | None = None,
    max_decode_bytes: int | None = None,
) -> ImageData:
    """Read one 2-D image; see the module docstring for the formats.

    ``frame`` picks one frame of a multi-frame DICOM or multi-page TIFF (these
    are refused without it). ``window`` (DICOM only): None keeps modality values
    (CT in HU), ``"dicom"`` applies the file's own VOI LUT or window, a
    ``(centre, width)`` pair applies that window; either window gives float32 in
    [0, 1]. ``key`` / ``index`` pick an array and an image along its first axis
    in an ``.npz`` (e.g. ``key="train_images", index=3`` in a MedMNIST file).
    NaN pixels are an error unless ``nan_fill`` gives a replacement value.
    A file whose header declares more than ``max_decode_bytes`` of pixels is
    refused before decoding (default: ``GREENFM_MAX_DECODE_BYTES``, else 256 MiB;
    see ``greenfm.data.decode_budget``).
    """
    path = Path(path)
    fmt = sniff_format(path)
    budget = {"max_decode_bytes": max_decode_bytes}
    if window is not None and fmt != "dicom":
        raise BadInputError("window= applies to DICOM files only", source=str(path))
    if fmt in _PIL_FORMATS:
        image = ImageData(*read_raster(path, fmt, frame, **budget))
    elif fmt == "dicom":
        from greenfm.data.dicom import read_dicom_image

        image = read_dicom_image(path, frame=frame, window=window, **budget)
    elif fmt in ("nifti", "nrrd"):
        image = _image_from_volume(path, nan_fill, max_decode_bytes)
    elif fmt in ("npz", "npy"):
        array = load_array(path, key=key, index=index, **budget)
        image = ImageData(array, {"format": fmt, "photometric": photometric_of(array), "spacing": None})
    else:
        raise BadInputError("is a folder; read a DICOM series with read_volume", source=str(path))
    image.array = checked_image_array(image.array, path, nan_fill=nan_fill)
    if image.metadata.get("bits_stored") is None:
        image.metadata["bits_stored"] = _default_bits(image.array)
    image.metadata["source"] = str(path)
    return image


@_one_line_errors
def read_volume(
    path: str | Path,
    *,
    series_uid: str | None = None,
    spacing: tuple[float, float, float] | None = None,
    nan_fill: float | None = None,
    max_decode_bytes: int | None = None,
) -> Volume:
    """Read a 3-D volume (D, H, W) with its spacing (z, y, x) mm and affine.

    ``path`` is a NIfTI or NRRD file, a DICOM series folder (``series_uid``
    chooses one series when the folder holds several), a multi-frame DICOM file,
    or an ``.npz`` / ``.npy`` array, taken as (D, H, W) in SPL display orientation
    (spacing from a ``spacing`` key, else 1 mm with ``metadata["spacing_known"] =
    False``). ``spacing`` overrides the stored spacing of any source. NaN voxels
    are an error unless ``nan_fill`` gives a replacement value. A volume whose
    headers declare more than ``max_decode_bytes`` of voxels is refused before
    decoding (default: ``GREENFM_MAX_DECODE_BYTES``, else 1 GiB).
    """
    path = Path(path)
    fmt = sniff_format(path)
    budget = {"max_decode_bytes": max_decode_bytes}
    if fmt == "dicom-series":
        from greenfm.data.dicom_series import read_dicom_series

        volume = read_dicom_series(path, series_uid=series_uid, **budget)
    elif fmt == "dicom":
        from greenfm.data.dicom import read_dicom_multiframe

        volume = read_dicom_multiframe(path, **budget)
    elif fmt in ("nifti", "nrrd"):
        from greenfm.data.volume_files import read_nifti, read_nrrd

        volume = (read_nifti if fmt == "nifti" else read_nrrd)(path, **budget)
    elif fmt in ("npz", "npy"):
        given = spacing if spacing is not None else _stored_spacing(path)
        volume = Volume(load_array(path, volume=True, **budget), (1.0, 1.0, 1.0), display_affine((1.0, 1.0, 1.0)))
        volume.metadata.update(format=fmt, spacing_known=given is not None)
    else:
        raise BadInputError(f"is a 2-D {fmt.upper()} image, not a volume; use read_image", source=str(path))
    given = spacing if spacing is not None else (_stored_spacing(path) if fmt in ("npz", "npy") else None)
    if given is not None:
        volume = with_spacing(volume, given)
        volume.metadata["spacing_given"] = True
    volume.array = checked_volume_array(volume.array, path, nan_fill=nan_fill)
    volume.metadata["source"] = str(path)
    return volume


def display_affine(spacing: tuple[float, float, float]) -> np.ndarray:
    """The affine of a bare array taken as (D, H, W) in SPL display orientation.

    Slices run inferior to superior, rows anterior to posterior, columns right
    to left: the usual axial display, and the orientation the volume presets use.
    """
    dz, dy, dx = (float(s) for s in spacing)
    return np.array([[0, 0, -dx, 0], [0, -dy, 0, 0], [dz, 0, 0, 0], [0, 0, 0, 1]], dtype=float)


def with_spacing(volume: Volume, spacing: tuple[float, float, float]) -> Volume:
    """The same voxels declared at another spacing (z, y, x) mm; affine directions kept."""
    affine = volume.affine.copy()
    for axis, size in enumerate(spacing):
        norm = np.linalg.norm(affine[:3, axis]) or 1.0
        affine[:3, axis] *= float(size) / norm
    return Volume(volume.array, tuple(float(s) for s in spacing), affine, dict(volume.metadata))  # type: ignore[arg-type]


# --- helpers -------------------------------------------------------------------------------


def _image_from_volume(path: Path, nan_fill: float | None, max_decode_bytes: int | None) -> ImageData:
    """A NIfTI / NRRD holding one slice, as a 2-D image (H, W)."""
    volume = read_volume(path, nan_fill=nan_fill, max_decode_bytes=max_decode_bytes)
    if volume.array.shape[0] != 1:
        raise BadInputError(f"is a 3-D volume {volume.array.shape}; read it with read_volume", source=str(path))
    _, dy, dx = volume.spacing
    array = volume.array[0]
    return ImageData(array, {"format": volume.metadata["format"], "photometric": "MONOCHROME2", "spacing": (dy, dx)})


def _stored_spacing(path: Path) -> tuple[float, float, float] | None:
    if path.suffix.lower() != ".npz":
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if "spacing" in data.files and np.asarray(data["spacing"]).size == 3:
                return tuple(float(s) for s in np.asarray(data["spacing"]).ravel())  # type: ignore[return-value]
    except Exception as err:  # a corrupt zip raises BadZipFile, zlib.error, ValueError, OSError...
        raise BadInputError(f"cannot be read as a NumPy file ({first_line(err)})", source=str(path)) from None
    return None


def _default_bits(array: np.ndarray) -> int | None:
    return array.dtype.itemsize * 8 if array.dtype.kind in "ui" else None


def _extension(path: Path) -> str:
    name = path.name.lower()
    for double in (".nii.gz",):
        if name.endswith(double):
            return double
    return path.suffix.lower()


