"""A DICOM file's header, read and checked before any pixel is decoded.

``read_header`` parses with the pixel data deferred and names non-DICOM bytes
as such; ``probe_dicom`` checks that pixel data is present, within the decode
budget, decodable here and (uncompressed) complete. Values quoted from a header
in a message go through ``header_text``, so every message stays one line.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder
from pydicom.uid import UID

from greenfm.data.arrays import first_line
from greenfm.data.decode_budget import check_decode_size
from greenfm.errors import BadInputError

PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # Pixel Data, Float Pixel Data, Double Float Pixel Data
NOT_DICOM = "not a DICOM file (no DICM preamble and not parseable)"
_DEFER_BYTES = 1024
# Attributes every real DICOM object carries at least one of; a preamble-less file
# that pydicom parses with force=True but holds none of them is not DICOM.
_CORE_KEYWORDS = ("SOPClassUID", "SOPInstanceUID", "Modality", "StudyInstanceUID", "SeriesInstanceUID",
                  "PatientID", "Rows", "Columns", "PixelData")  # fmt: skip
_NUMERIC_KEYWORDS = ("PixelSpacing", "ImagerPixelSpacing", "ImageOrientationPatient", "ImagePositionPatient",
                     "RescaleSlope", "RescaleIntercept", "SliceThickness", "SpacingBetweenSlices",
                     "GridFrameOffsetVector")  # fmt: skip
# The attributes greenfm reads, converted at read time so that a garbled one fails there.
_USED_KEYWORDS = _CORE_KEYWORDS[:-1] + (
    "BitsAllocated", "BitsStored", "PixelRepresentation", "SamplesPerPixel", "PhotometricInterpretation",
    "NumberOfFrames", "PlanarConfiguration", "PixelSpacing", "ImagerPixelSpacing", "ImageOrientationPatient",
    "ImagePositionPatient", "SpacingBetweenSlices", "SliceThickness", "InstanceNumber", "EchoNumbers",
    "RescaleSlope", "RescaleIntercept", "RescaleType", "WindowCenter", "WindowWidth", "VOILUTFunction",
    "ModalityLUTSequence", "VOILUTSequence", "SharedFunctionalGroupsSequence", "GridFrameOffsetVector",
    "SeriesDescription", "RedPaletteColorLookupTableDescriptor",
)  # fmt: skip


def read_header(path: Path) -> Dataset:
    """The dataset with pixel data deferred (not read into memory); BadInputError if not DICOM."""
    return read_file(path, defer_size=_DEFER_BYTES)


def read_file(path: Path, **options) -> Dataset:
    """``dcmread`` with every failure, and every non-DICOM file, turned into one BadInputError."""
    preamble = has_preamble(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns on many harmless VR oddities
            ds = pydicom.dcmread(path, force=not preamble, **options)
            # Values are converted lazily: make a garbled element greenfm reads fail here, not
            # later (converting every element, private sequences included, quadruples the time).
            for keyword in _USED_KEYWORDS:
                ds.get(keyword)
            for _ in getattr(ds, "file_meta", None) or ():
                pass
            if not preamble and not any(keyword in ds for keyword in _CORE_KEYWORDS):
                raise BadInputError(NOT_DICOM, source=str(path))
            return ds
    except BadInputError:
        raise
    except Exception as err:  # pydicom raises many types (InvalidDicomError, EOFError, struct.error, ...)
        if not preamble:
            raise BadInputError(NOT_DICOM, source=str(path)) from None
        raise BadInputError(f"not a readable DICOM file ({first_line(err)})", source=str(path)) from None


def has_preamble(path: Path) -> bool:
    """True when the file carries the standard 128-byte preamble and ``DICM`` marker."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def probe_dicom(path: Path, *, max_decode_bytes: int | None = None) -> Dataset:
    """Check a DICOM file from its header: pixel data present, decodable, complete, within budget.

    Returns the header (pixel data deferred) so callers can reuse it.
    """
    ds = read_header(path)
    check_has_pixels(ds, path)
    check_dicom_size(ds, path, max_decode_bytes=max_decode_bytes)
    check_pixel_data(ds, path)
    return ds


def check_pixel_data(ds: Dataset, path: Path) -> None:
    """Pixel data present, non-empty, decodable here, (uncompressed) complete; numeric attributes numeric."""
    check_has_pixels(ds, path)
    check_numeric_header(ds, path)
    tsyntax = _transfer_syntax(ds)
    if tsyntax is not None and not (isinstance(tsyntax, UID) and tsyntax.is_transfer_syntax):
        raise BadInputError(f"unknown transfer syntax UID {header_text(tsyntax)}", source=str(path))
    if tsyntax is not None and tsyntax.is_compressed:
        try:
            decoder = get_decoder(tsyntax)
        except NotImplementedError:
            raise BadInputError(f"no pixel decoder for transfer syntax {tsyntax.name}", source=str(path)) from None
        if not decoder.is_available:
            needs = "; ".join(decoder.missing_dependencies) or "an optional plugin"
            raise BadInputError(f"pixel data compressed as {tsyntax.name} needs a decoder: {needs}", source=str(path))
    elif tsyntax is None or not tsyntax.is_deflated:
        _check_native_length(ds, path)


def check_numeric_header(ds: Dataset, path: Path) -> None:
    """The numeric attributes greenfm computes geometry and values from must hold numbers."""
    for keyword in _NUMERIC_KEYWORDS:
        value = ds.get(keyword)
        if value is None or value == "":
            continue
        try:
            [float(v) for v in (value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value])]
        except (TypeError, ValueError):
            raise BadInputError(f"DICOM {keyword} is not numeric ({header_text(value, 40)})", source=str(path)) from None


def check_has_pixels(ds: Dataset, path: Path) -> None:
    if not any(tag in ds for tag in PIXEL_TAGS):
        hint = "; truncated?" if expects_pixels(ds) else ""
        raise BadInputError(f"DICOM file has no pixel data ({_kind(ds)}{hint})", source=str(path))
    rows, cols = _header_int(ds, "Rows", 0, path), _header_int(ds, "Columns", 0, path)
    if rows == 0 or cols == 0:
        raise BadInputError(f"DICOM image has zero size (Rows {rows}, Columns {cols})", source=str(path))


def check_dicom_size(
    ds: Dataset,
    path: Path,
    *,
    frames: int | None = None,
    volume: bool | None = None,
    max_decode_bytes: int | None = None,
) -> int:
    """Rows x Columns x samples x frames x bits allocated, against the decode budget (before decoding).

    ``frames`` is how many frames will be decoded (default: all). ``volume``
    picks the 3-D default budget (default: when more than one frame).
    """
    rows, cols = _header_int(ds, "Rows", 0, path), _header_int(ds, "Columns", 0, path)
    samples = _header_int(ds, "SamplesPerPixel", 1, path) or 1
    tag = next((t for t in PIXEL_TAGS if t in ds), None)
    bits = {0x7FE00008: 32, 0x7FE00009: 64}.get(tag) or _header_int(ds, "BitsAllocated", 16, path) or 16
    n = number_of_frames(ds) if frames is None else frames
    shape = (n, rows, cols, samples) if n > 1 else (rows, cols, samples)
    volume = n > 1 if volume is None else volume
    return check_decode_size(path, shape, max(bits, 8) / 8, volume=volume, budget=max_decode_bytes)


def _header_int(ds: Dataset, keyword: str, default: int, path: Path) -> int:
    try:
        value = int(ds.get(keyword, default) or default)
    except Exception:  # garbage values: a multi-valued or non-numeric element
        raise BadInputError(f"DICOM {keyword} is not a number ({header_text(ds.get(keyword), 40)})", source=str(path)) from None
    if value < 0:
        raise BadInputError(f"DICOM {keyword} is negative ({value})", source=str(path))
    return value


def expects_pixels(ds: Dataset) -> bool:
    """True for objects that should carry pixels (an image SOP class, or image size attributes).

    pydicom reads a file cut short as a shorter dataset without complaint; this
    tells a truncated image from a pixel-less object (DICOMDIR, report, RT plan).
    """
    return "Rows" in ds or "Image Storage" in _kind(ds)


def number_of_frames(ds: Dataset) -> int:
    try:
        return max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        return 1


def header_text(value: Any, limit: int = 64) -> str:
    """A header value fit for a one-line message: printable, whitespace collapsed, truncated."""
    text = " ".join("".join(c if c.isprintable() else " " for c in str(value)).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _kind(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    sop = ds.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta is not None else None)
    return header_text(getattr(sop, "name", None) or ds.get("Modality") or "unknown object")


def _transfer_syntax(ds: Dataset):
    meta = getattr(ds, "file_meta", None)
    return meta.get("TransferSyntaxUID") if meta is not None else None


def _check_native_length(ds: Dataset, path: Path) -> None:
    """Uncompressed pixel data must hold Rows x Columns x Samples x Frames x Bits and fit in the file."""
    tag = next(t for t in PIXEL_TAGS if t in ds)
    elem = ds.get_item(tag, keep_deferred=True)
    length = getattr(elem, "length", None)
    if length is None or length == 0xFFFFFFFF:
        return  # not deferred (small) or encapsulated: nothing cheap to check
    rows, cols = int(ds.Rows), int(ds.Columns)
    samples = 2 if ds.get("PhotometricInterpretation") == "YBR_FULL_422" else int(ds.get("SamplesPerPixel", 1) or 1)
    bits = {0x7FE00008: 32, 0x7FE00009: 64}.get(tag) or int(ds.get("BitsAllocated", 16) or 16)
    expected = math.ceil(rows * cols * samples * number_of_frames(ds) * bits / 8)
    tell = getattr(elem, "value_tell", None)
    available = path.stat().st_size - tell if tell is not None else length
    if min(length, available) < expected:
        raise BadInputError(
            f"DICOM pixel data is truncated ({min(length, available)} of {expected} bytes)", source=str(path)
        )
