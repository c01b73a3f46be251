"""NIfTI (nibabel) and NRRD (pynrrd) files -> ``Volume``.

Both store voxels with the first index along x; greenfm arrays are (D, H, W) =
(z, y, x), so the array is transposed and the affine's columns permuted to
match: ``Volume.affine`` still maps a voxel index, now in array order, to RAS+
millimetres. No reorientation or resampling happens here.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np

from greenfm.data.arrays import check_array_header, first_line
from greenfm.data.readers import Volume
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


def probe_nifti(path: Path) -> None:
    """Header checks: shape (at most 3 non-trivial axes), real dtype, data not truncated."""
    img = _load_nifti(path)
    shape, dtype = img.shape, img.get_data_dtype()
    check_array_header(shape, dtype, path)
    _check_volume_shape(shape, path)
    header = img.header
    offset = int(header.get("vox_offset", 0)) if hasattr(header, "get") else 0
    expected = offset + int(np.prod(shape)) * np.dtype(dtype).itemsize
    if path.name.lower().endswith(".nii.gz"):
        if not gzip_isize_matches(path, expected):
            raise BadInputError("NIfTI data is truncated or the gzip stream is corrupt", source=str(path))
    elif path.suffix.lower() == ".nii" and path.stat().st_size < expected:
        raise BadInputError(f"NIfTI data is truncated ({path.stat().st_size} of {expected} bytes)", source=str(path))


def read_nifti(path: Path) -> Volume:
    img = _load_nifti(path)
    check_array_header(img.shape, img.get_data_dtype(), path)
    _check_volume_shape(img.shape, path)
    try:
        data = _scaled_data(img)
    except (OSError, EOFError, ValueError) as err:
        raise BadInputError(f"NIfTI data cannot be read ({first_line(err)})", source=str(path)) from None
    unit = _TO_MM.get(img.header.get_xyzt_units()[0], 1.0)
    zooms = tuple(float(z) * unit for z in img.header.get_zooms()[:3])
    zooms = zooms + (1.0,) * (3 - len(zooms))
    affine = np.diag([unit, unit, unit, 1.0]) @ img.affine
    volume = _from_xyz(data, zooms, affine)
    volume.metadata.update(format="nifti", stored_dtype=str(img.get_data_dtype()))
    return volume


def probe_nrrd(path: Path) -> None:
    header = _read_nrrd_header(path)
    sizes = tuple(int(s) for s in header.get("sizes", ()))
    dtype = _nrrd_dtype(header, path)
    check_array_header(sizes, dtype, path)
    _check_volume_shape(sizes, path)
    data_file = header.get("data file") or header.get("datafile")
    if data_file and not (path.parent / str(data_file)).exists():
        raise BadInputError(f"NRRD data file {data_file} not found", source=str(path))
    if not data_file and str(header.get("encoding", "")).lower() == "raw":
        expected = int(np.prod(sizes)) * dtype.itemsize
        if path.stat().st_size < expected:
            raise BadInputError(f"NRRD data is truncated (file smaller than {expected} data bytes)", source=str(path))


def read_nrrd(path: Path) -> Volume:
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
    if hasattr(proxy, "get_unscaled") and float(slope).is_integer() and float(inter).is_integer():
        raw = proxy.get_unscaled()
        if raw.dtype.kind in "iu":
            return raw.astype(np.int64) * int(slope) + int(inter)
    return np.asanyarray(proxy)


def _check_volume_shape(shape: tuple[int, ...], path: Path) -> None:
    trimmed = list(shape)
    while len(trimmed) > 3 and trimmed[-1] == 1:
        trimmed.pop()
    if len(trimmed) > 3:
        raise BadInputError(f"{len(trimmed)}-D data {tuple(shape)}; greenfm reads 3-D volumes", source=str(path))


def _load_nifti(path: Path):
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
    nib.save(img, str(path))
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
