"""The pixel-array policy shared by every reader: kept types, accepted shapes, NaN handling.

Pixels keep their type where it is one of uint8, uint16, int16 or float32;
other types are converted losslessly where the values allow (int32 -> uint16 or
int16, float64 -> float32) and refused otherwise (complex, strings, empty).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from greenfm.errors import BadInputError

KEPT_DTYPES = (np.uint8, np.uint16, np.int16, np.float32)


def checked_array(array: np.ndarray, source: str | Path, *, nan_fill: float | None = None) -> np.ndarray:
    """Bring pixels to uint8 / uint16 / int16 / float32, refusing what cannot be kept exactly.

    bool -> uint8; int8 -> int16; wider integers -> uint16 or int16 when the
    values fit, else float32; float16/64 -> float32. Complex, object and string
    arrays, empty arrays and infinities are refused; NaN is refused unless
    ``nan_fill`` is given.
    """
    arr = np.asarray(array)
    if arr.size == 0:
        raise BadInputError(f"image is empty (shape {arr.shape})", source=str(source))
    kind = arr.dtype.kind
    if kind == "b":
        arr = arr.astype(np.uint8)
    elif kind in "iu" and arr.dtype not in (np.uint8, np.uint16, np.int16):
        lo, hi = int(arr.min()), int(arr.max())
        if lo >= 0 and hi <= 65535 and (kind == "u" or hi > 32767):
            arr = arr.astype(np.uint16)
        elif -32768 <= lo and hi <= 32767:
            arr = arr.astype(np.int16)
        else:
            arr = arr.astype(np.float32)
    elif kind == "f":
        arr = arr.astype(np.float32, copy=False)
        finite = np.isfinite(arr)
        if not finite.all():
            n_nan = int(np.isnan(arr).sum())
            if n_nan < arr.size - int(finite.sum()):
                raise BadInputError("contains infinite values", source=str(source))
            if nan_fill is None:
                raise BadInputError(f"contains {n_nan} NaN value(s) (pass nan_fill= to replace them)", source=str(source))
            arr = np.where(np.isnan(arr), np.float32(nan_fill), arr)
    elif kind not in "iu":
        raise BadInputError(f"unsupported pixel type {arr.dtype} (expected integer or real values)", source=str(source))
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return np.ascontiguousarray(arr)


def checked_image_array(array: np.ndarray, source: str | Path, *, nan_fill: float | None = None) -> np.ndarray:
    """``checked_array`` plus shape (H, W) or (H, W, 3|4); (H, W, 1) becomes (H, W)."""
    arr = checked_array(array, source, nan_fill=nan_fill)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise BadInputError(f"expected a 2-D image (H, W) or (H, W, 3|4), got shape {arr.shape}", source=str(source))
    return arr


def checked_volume_array(array: np.ndarray, source: str | Path, *, nan_fill: float | None = None) -> np.ndarray:
    """``checked_array`` plus shape (D, H, W); trailing length-1 axes are dropped."""
    arr = checked_array(array, source, nan_fill=nan_fill)
    while arr.ndim > 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise BadInputError(f"expected a 3-D volume (D, H, W), got shape {arr.shape}", source=str(source))
    return arr


def check_array_header(shape: tuple[int, ...], dtype: np.dtype, path: Path) -> None:
    """Shared header checks for array files: no empty arrays, real numbers only."""
    if 0 in shape or len(shape) == 0:
        raise BadInputError(f"array is empty (shape {tuple(shape)})", source=str(path))
    if np.dtype(dtype).kind not in "biuf":
        raise BadInputError(f"unsupported pixel type {np.dtype(dtype)} (expected integer or real values)", source=str(path))


def load_array(
    path: Path,
    *,
    key: str | None = None,
    index: int | None = None,
    volume: bool = False,
    max_decode_bytes: int | None = None,
) -> np.ndarray:
    """One array from an ``.npy`` / ``.npz`` file (no pickles), optionally one item of it.

    The whole array's header size is checked against the decode budget first
    (``volume`` picks the 3-D default): NumPy reads the whole array even for one item.
    """
    from greenfm.data.decode_budget import check_decode_size

    try:
        with open(path, "rb") as f:
            is_zip = f.read(4) == b"PK\x03\x04"  # .npz files are zip archives
        if is_zip:
            with np.load(path, allow_pickle=False) as data:
                name = _npz_key(data, key, path)
                shape, dtype = _npz_member_header(data, name)
                check_decode_size(path, shape, dtype.itemsize, volume=volume, budget=max_decode_bytes)
                array = np.asarray(data[name])
        else:
            header = np.load(path, mmap_mode="r", allow_pickle=False)  # maps the file: reads the header only
            check_decode_size(path, header.shape, header.dtype.itemsize, volume=volume, budget=max_decode_bytes)
            array = np.array(header)
            del header
    except BadInputError:
        raise
    except Exception as err:  # corrupt headers raise ValueError, SyntaxError, OverflowError, BadZipFile, zlib.error...
        raise BadInputError(f"cannot be read as a NumPy array ({first_line(err)})", source=str(path)) from None
    if index is not None:
        if not -len(array) <= index < len(array):
            raise BadInputError(f"index {index} is out of range for {len(array)} items", source=str(path))
        array = array[index]
    return array


def probe_numpy(path: Path, fmt: str, *, max_decode_bytes: int | None = None) -> None:
    """Headers only: real, non-empty arrays within the decode budget (3-D budget for 3-D arrays)."""
    from greenfm.data.decode_budget import check_decode_size

    try:
        if fmt == "npy":
            array = np.load(path, mmap_mode="r", allow_pickle=False)  # maps the file: reads the header only
            headers = [(array.shape, array.dtype)]
            del array
        else:
            with np.load(path, allow_pickle=False) as data:
                if not data.files:
                    raise BadInputError("the .npz holds no arrays", source=str(path))
                headers = [_npz_member_header(data, name) for name in data.files if name != "spacing"]
        for shape, dtype in headers:
            check_array_header(shape, dtype, path)
            check_decode_size(path, shape, dtype.itemsize, volume=len(shape) >= 3, budget=max_decode_bytes)
    except BadInputError:
        raise
    except Exception as err:  # as in load_array: NumPy's header parser raises many types
        raise BadInputError(f"cannot be read as a NumPy file ({first_line(err)})", source=str(path)) from None


def _npz_member_header(data, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of one ``.npz`` member from its ``.npy`` header, without decompressing the data."""
    with data.zip.open(f"{name}.npy") as member:
        version = np.lib.format.read_magic(member)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(member)
    return shape, dtype


def _npz_key(data, key: str | None, path: Path) -> str:
    if key is not None:
        if key not in data.files:
            raise BadInputError(f"has no array {key!r} (it has {', '.join(data.files)})", source=str(path))
        return key
    for name in ("image", "volume", "arr_0"):
        if name in data.files:
            return name
    arrays = [f for f in data.files if f != "spacing"]
    if len(arrays) != 1:
        raise BadInputError(f"holds several arrays ({', '.join(data.files)}); pass key=", source=str(path))
    return arrays[0]


def photometric_of(array: np.ndarray) -> str:
    """``RGB`` for (H, W, 3|4) arrays, else ``MONOCHROME2`` (high values bright)."""
    return "RGB" if array.ndim == 3 and array.shape[-1] in (3, 4) else "MONOCHROME2"


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
