"""NIfTI (nibabel) and NRRD (pynrrd) files -> ``Volume``.

Both store voxels with the first index along x; greenfm arrays are (D, H, W) =
(z, y, x), so the array is transposed and the affine's columns permuted to
match: ``Volume.affine`` still maps a voxel index, now in array order, to RAS+
millimetres. No reorientation or resampling happens here.
"""

from __future__ import annotations

import bz2
import gzip
import zlib
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np

from greenfm.data.arrays import check_array_header, first_line
from greenfm.data.decode_budget import check_decode_size
from greenfm.data.image_data import Volume
from greenfm.io_safety import atomic_output
from greenfm.errors import BadInputError

# (i, j, k) file order -> (d, h, w) array order: d = k, h = j, w = i.
_XYZ_TO_DHW = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
_TO_MM = {"mm": 1.0, "meter": 1000.0, "micron": 0.001, "unknown": 1.0}
_NRRD_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "unsigned char": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "unsigned short": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "unsigned": "u4", "unsigned int": "u4", "uint32": "u4",
    "longlong": "i8", "long long": "i8", "int64": "i8",
    "ulonglong": "u8", "unsigned long long": "u8", "uint64": "u8",
    "float": "f4", "double": "f8",
}  # fmt: skip
_NRRD_SPACE_TO_RAS = {
    "right-anterior-superior": (1, 1, 1), "ras": (1, 1, 1),
    "left-anterior-superior": (-1, 1, 1), "las": (-1, 1, 1),
    "left-posterior-superior": (-1, -1, 1), "lps": (-1, -1, 1),
    "scanner-xyz": (1, 1, 1), "3d-right-handed": (1, 1, 1),
}  # fmt: skip


def probe_nifti(path: Path, *, max_decode_bytes: int | None = None) -> None:
    """Every header field the reader relies on, then the data's length; never reads the voxels.

    sizeof_hdr (348 or 540), dims (1-7 axes, each at least 1, at most 3
    non-trivial), a real datatype, finite voxel sizes, vox_offset past the
    header and within the file, the data not truncated, and the decoded size
    within the decode budget.
    """
    img = _load_nifti(path)
    shape, dtype = _checked_nifti_header(img, path, max_decode_bytes)
    offset = _data_offset(img)
    expected = offset + int(np.prod(shape)) * np.dtype(dtype).itemsize
    if path.name.lower().endswith(".nii.gz"):
        if not gzip_isize_matches(path, expected):
            raise BadInputError("NIfTI data is truncated or the gzip stream is corrupt", source=str(path))
    elif path.suffix.lower() == ".nii":
        size = path.stat().st_size
        if size < expected:
            raise BadInputError(f"NIfTI data is truncated ({size} of {expected} bytes)", source=str(path))


def read_nifti(path: Path, *, max_decode_bytes: int | None = None) -> Volume:
    img = _load_nifti(path)
    _checked_nifti_header(img, path, max_decode_bytes)
    try:
        data = _scaled_data(img)
    except (OSError, EOFError, ValueError, MemoryError) as err:
        raise BadInputError(f"NIfTI data cannot be read ({first_line(err)})", source=str(path)) from None
    try:
        unit = _TO_MM.get(img.header.get_xyzt_units()[0], 1.0)
    except KeyError:  # an xyzt_units code outside the standard: the spatial unit is unknown, taken as mm
        unit = 1.0
    zooms = tuple(float(z) * unit for z in img.header.get_zooms()[:3])
    zooms = zooms + (1.0,) * (3 - len(zooms))
    affine = np.diag([unit, unit, unit, 1.0]) @ img.affine
    volume = _from_xyz(data, zooms, affine)
    volume.metadata.update(format="nifti", stored_dtype=str(img.get_data_dtype()))
    return volume


def probe_nrrd(path: Path, *, max_decode_bytes: int | None = None) -> None:
    header = _read_nrrd_header(path)
    sizes, dtype = _checked_nrrd_header(header, path, max_decode_bytes)
    data_file = header.get("data file") or header.get("datafile")
    if data_file and not (path.parent / str(data_file)).exists():
        raise BadInputError(f"NRRD data file {data_file} not found", source=str(path))
    if not data_file and str(header.get("encoding", "")).lower() == "raw":
        expected = int(np.prod(sizes)) * dtype.itemsize
        if path.stat().st_size < expected:
            raise BadInputError(f"NRRD data is truncated (file smaller than {expected} data bytes)", source=str(path))


def read_nrrd(path: Path, *, max_decode_bytes: int | None = None) -> Volume:
    header = _read_nrrd_header(path)
    sizes, dtype = _checked_nrrd_header(header, path, max_decode_bytes)
    _check_compressed_nrrd(path, header, int(np.prod(sizes)) * dtype.itemsize)
    try:
        data, header = nrrd.read(str(path), index_order="F")
    except Exception as err:  # pynrrd raises NRRDError, ValueError, zlib.error, OSError...
        raise BadInputError(f"NRRD file cannot be read ({first_line(err)})", source=str(path)) from None
    _check_volume_shape(data.shape, path)
    directions = header.get("space directions")
    space = str(header.get("space", "")).lower()
    affine = np.eye(4)
    if directions is not None:
        rows = [np.asarray(d, float) for d in directions]
        spatial = [r for r in rows if r.ndim == 1 and r.size == 3 and np.all(np.isfinite(r))]
        if len(spatial) == 3:
            affine[:3, :3] = np.stack(spatial, axis=1)
    elif header.get("spacings") is not None:
        affine[:3, :3] = np.diag([float(s) for s in header["spacings"]][:3])
    if header.get("space origin") is not None:
        affine[:3, 3] = np.asarray(header["space origin"], float)[:3]
    affine = np.diag([*_NRRD_SPACE_TO_RAS.get(space, (1, 1, 1)), 1]) @ affine
    zooms = tuple(float(np.linalg.norm(affine[:3, i])) or 1.0 for i in range(3))
    volume = _from_xyz(data, zooms, affine)
    volume.metadata.update(format="nrrd", space=space or None)
    return volume


def _from_xyz(data: np.ndarray, zooms: tuple[float, ...], affine: np.ndarray) -> Volume:
    data = np.asarray(data)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[:, :, None]
    array = data.transpose(2, 1, 0)
    spacing = (float(zooms[2]), float(zooms[1]), float(zooms[0]))
    return Volume(array, spacing, affine @ _XYZ_TO_DHW, {})


def _scaled_data(img) -> np.ndarray:
    """Voxels with the NIfTI scaling applied, kept integer when slope and intercept are whole."""
    proxy = img.dataobj
    slope, inter = getattr(proxy, "slope", 1.0), getattr(proxy, "inter", 0.0)
    if not (np.isfinite(slope) and np.isfinite(inter)) or (slope == 1.0 and inter == 0.0):
        return np.asanyarray(proxy.get_unscaled() if hasattr(proxy, "get_unscaled") else proxy)
    whole = float(slope).is_integer() and float(inter).is_integer() and max(abs(slope), abs(inter)) < 2**31
    if hasattr(proxy, "get_unscaled") and whole:  # (larger whole numbers would overflow int64: use floats)
        raw = proxy.get_unscaled()
        if raw.dtype.kind in "iu" and raw.size:
            reach = max(abs(int(raw.min())), abs(int(raw.max()))) * abs(int(slope)) + abs(int(inter))
            if reach < 2**62:  # int32 when it holds every value (CT's int16 + 1024 does): half the memory
                wide = np.int32 if reach < 2**31 else np.int64
                return raw.astype(wide) * wide(int(slope)) + wide(int(inter))
    return np.asanyarray(proxy)


def _check_sizeof_hdr(path: Path) -> None:
    """The on-disk sizeof_hdr must be 348 (NIfTI-1) or 540 (NIfTI-2); nibabel silently repairs it."""
    try:
        with (gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")) as f:
            head = f.read(4)
    except Exception as err:  # OSError, EOFError, zlib.error from a corrupt gzip stream
        raise BadInputError(f"not a readable NIfTI file ({first_line(err)})", source=str(path)) from None
    if len(head) < 4:
        raise BadInputError("not a readable NIfTI file (shorter than its header)", source=str(path))
    little, big = int.from_bytes(head, "little"), int.from_bytes(head, "big")
    if little not in (348, 540) and big not in (348, 540):
        raise BadInputError(f"NIfTI sizeof_hdr is {little}, not 348 (NIfTI-1) or 540 (NIfTI-2)", source=str(path))


def _checked_nifti_header(img, path: Path, max_decode_bytes: int | None) -> tuple[tuple[int, ...], np.dtype]:
    """The checks both the probe and the reader need; returns (shape, stored dtype)."""
    header = img.header
    expected_size = 540 if isinstance(header, nib.Nifti2Header) else 348
    dim = [int(d) for d in header["dim"]]
    if not 1 <= dim[0] <= 7:
        raise BadInputError(f"NIfTI dim[0] is {dim[0]}; it must count 1 to 7 axes", source=str(path))
    if any(d < 1 for d in dim[1 : dim[0] + 1]):
        raise BadInputError(f"NIfTI dims {tuple(dim[1 : dim[0] + 1])} must all be at least 1", source=str(path))
    try:
        dtype = img.get_data_dtype()
        shape = img.shape
    except Exception as err:  # an unknown datatype code
        raise BadInputError(f"NIfTI datatype {int(header['datatype'])} is not supported ({first_line(err)})", source=str(path)) from None
    check_array_header(shape, dtype, path)
    _check_volume_shape(shape, path)
    zooms = np.asarray(header["pixdim"][1:4], dtype=float)
    if not np.all(np.isfinite(zooms)):
        raise BadInputError(f"NIfTI voxel sizes {tuple(zooms.tolist())} are not finite", source=str(path))
    offset = _data_offset(img)
    if offset < expected_size:
        raise BadInputError(f"NIfTI vox_offset {offset} points into the {expected_size}-byte header", source=str(path))
    if path.suffix.lower() == ".nii" and offset > path.stat().st_size:
        raise BadInputError(f"NIfTI vox_offset {offset} is past the end of the file ({path.stat().st_size} bytes)",
                            source=str(path))
    slope, inter = header.get_slope_inter()
    inter = inter or 0.0
    itemsize = np.dtype(dtype).itemsize
    if slope is not None and np.isfinite(slope) and np.isfinite(inter) and not (slope == 1.0 and inter == 0.0):
        small_whole = float(slope).is_integer() and float(inter).is_integer() and max(abs(slope), abs(inter)) < 2**15
        # _scaled_data: int16 or narrower scaled by small whole numbers -> int32; anything else -> float64
        itemsize = 4 if small_whole and np.dtype(dtype).kind in "iu" and itemsize <= 2 else 8
    check_decode_size(path, shape, itemsize, volume=True, budget=max_decode_bytes)
    return shape, dtype


def _data_offset(img) -> int:
    """The on-disk vox_offset (nibabel resets the loaded header's copy to 0)."""
    return int(getattr(img.dataobj, "offset", 0) or 0)


def _checked_nrrd_header(header: dict, path: Path, max_decode_bytes: int | None) -> tuple[tuple[int, ...], np.dtype]:
    try:
        sizes = tuple(int(s) for s in header.get("sizes", ()))
    except (TypeError, ValueError):
        raise BadInputError(f"NRRD sizes {header.get('sizes')!r:.40} are not whole numbers", source=str(path)) from None
    dtype = _nrrd_dtype(header, path)
    check_array_header(sizes, dtype, path)
    if any(s < 1 for s in sizes):
        raise BadInputError(f"NRRD sizes {sizes} must all be at least 1", source=str(path))
    _check_volume_shape(sizes, path)
    check_decode_size(path, sizes, dtype.itemsize, volume=True, budget=max_decode_bytes)
    return sizes, dtype


def _check_compressed_nrrd(path: Path, header: dict, expected: int) -> None:
    """A gzip / bzip2 payload must not inflate past what the header declares.

    pynrrd decompresses the whole stream into memory before comparing sizes, so
    a 1 MB file could claim 8 voxels and inflate to 1 GB. Stream it once here,
    keeping nothing, and stop as soon as it exceeds the declared size (+1 MiB
    for a byte skip).
    """
    encoding = str(header.get("encoding", "")).lower()
    if encoding not in ("gzip", "gz", "bzip2", "bz2") or header.get("data file") or header.get("datafile"):
        return
    cap, total, step = expected + 2**20, 0, 2**20
    inflate = zlib.decompressobj(zlib.MAX_WBITS | 32) if encoding.startswith("gz") else bz2.BZ2Decompressor()
    try:
        with open(path, "rb") as fh:
            for line in fh:  # the header ends at the first empty line
                if not line.strip():
                    break
            for chunk in iter(lambda: fh.read(2**16), b""):
                data = chunk
                while True:
                    if isinstance(inflate, bz2.BZ2Decompressor):
                        out = inflate.decompress(data, step) if not inflate.eof else b""
                        more = not inflate.eof and not inflate.needs_input
                    else:
                        out = inflate.decompress(data, step)
                        more = bool(inflate.unconsumed_tail)
                    total += len(out)
                    if total > cap:
                        raise BadInputError(f"NRRD data inflates past the {expected} bytes its header declares",
                                            source=str(path))
                    if not more:
                        break
                    data = inflate.unconsumed_tail if not isinstance(inflate, bz2.BZ2Decompressor) else b""
                if inflate.eof:
                    break
    except BadInputError:
        raise
    except Exception as err:  # zlib.error, OSError, EOFError on a corrupt stream
        raise BadInputError(f"NRRD {encoding} data is corrupt ({first_line(err)})", source=str(path)) from None


def _check_volume_shape(shape: tuple[int, ...], path: Path) -> None:
    trimmed = list(shape)
    while len(trimmed) > 3 and trimmed[-1] == 1:
        trimmed.pop()
    if len(trimmed) > 3:
        raise BadInputError(f"{len(trimmed)}-D data {tuple(shape)}; greenfm reads 3-D volumes", source=str(path))


def _load_nifti(path: Path):
    _check_sizeof_hdr(path)
    try:
        return nib.load(str(path))
    except Exception as err:  # nibabel raises ImageFileError, HeaderDataError, OSError, EOFError...
        raise BadInputError(f"not a readable NIfTI file ({first_line(err)})", source=str(path)) from None


def _read_nrrd_header(path: Path) -> dict:
    try:
        return nrrd.read_header(str(path))
    except Exception as err:  # pynrrd raises NRRDError, ValueError, UnicodeDecodeError...
        raise BadInputError(f"not a readable NRRD header ({first_line(err)})", source=str(path)) from None


def _nrrd_dtype(header: dict, path: Path) -> np.dtype:
    """The voxel type named by the header (the NRRD spec's aliases, normalised)."""
    name = " ".join(str(header.get("type", "")).lower().replace("_t", "").split())
    for prefix in ("signed ",):
        name = name.removeprefix(prefix)
    code = _NRRD_TYPES.get(name.removesuffix(" int") if name not in _NRRD_TYPES else name)
    if code is None:
        raise BadInputError(f"unsupported NRRD type {header.get('type')!r}", source=str(path))
    dtype = np.dtype(code)
    if dtype.itemsize > 1 and str(header.get("endian", "little")).lower() == "big":
        dtype = dtype.newbyteorder(">")
    return dtype


def write_nifti(volume: Volume, path: Path) -> Path:
    """Save a volume as NIfTI (x, y, z on disk, with its RAS affine); the inverse of ``read_nifti``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.ascontiguousarray(np.asarray(volume.array).transpose(2, 1, 0))
    img = nib.Nifti1Image(data, volume.affine @ _XYZ_TO_DHW)  # the permutation is its own inverse
    img.header.set_xyzt_units("mm")
    with atomic_output(path) as tmp:  # a full disk: one line, no partial volume
        nib.save(img, str(tmp))
    return path


def gzip_isize_matches(path: Path, expected_bytes: int) -> bool:
    """Cheap truncation check of a gzip file: its trailer stores the uncompressed size mod 2**32.

    When the trailer disagrees (a truncated file, or a rare multi-member gzip),
    stream-decompress once without keeping the data to decide.
    """
    with open(path, "rb") as f:
        f.seek(-4, 2)
        isize = int.from_bytes(f.read(4), "little")
    if isize == expected_bytes % 2**32:
        return True
    try:
        total = 0
        with gzip.open(path, "rb") as g:
            while chunk := g.read(1 << 24):
                total += len(chunk)
    except (OSError, EOFError):
        return False
    return total >= expected_bytes
