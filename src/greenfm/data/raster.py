"""PNG / JPEG / TIFF through Pillow: 8 or 16 bit, grey or RGB, read as stored.

Pillow opens 16-bit grey PNG and TIFF as mode ``I;16`` (older versions ``I``),
kept here as uint16. It silently reduces 16-bit colour to 8 bits, so such files
are refused instead of losing precision.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from greenfm.data.arrays import first_line, photometric_of
from greenfm.data.decode_budget import check_decode_size
from greenfm.errors import BadInputError

# Bytes per pixel of Pillow's decoded buffer, by mode (it pads RGB and most others to 4).
_PIL_PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}


def probe_raster(path: Path, *, max_decode_bytes: int | None = None) -> None:
    try:
        with Image.open(path) as im:
            if 0 in im.size:
                raise BadInputError(f"image has zero size {im.size}", source=str(path))
            check_pil_size(im, path, max_decode_bytes)
            _check_pil_depth(im, path)
            im.verify()  # PNG: walks every chunk and checks its CRC; no decompression
    except BadInputError:
        raise
    except Exception as err:  # corrupt files make Pillow raise OSError, SyntaxError, struct.error, IndexError...
        raise BadInputError(f"corrupt or unreadable image ({first_line(err)})", source=str(path)) from None


def read_raster(
    path: Path, fmt: str, frame: int | None, *, max_decode_bytes: int | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Pixels and metadata of one page; multi-page files need ``frame``.

    The page's size is checked against the decode budget before Pillow decodes it.
    """
    try:
        with Image.open(path) as im:
            check_pil_size(im, path, max_decode_bytes)
            n_frames = getattr(im, "n_frames", 1)
            if n_frames > 1 and frame is None:
                raise BadInputError(f"has {n_frames} pages; pass frame= to pick one", source=str(path))
            if frame is not None:
                if not 0 <= frame < n_frames:
                    raise BadInputError(f"frame {frame} is out of range for {n_frames} page(s)", source=str(path))
                im.seek(frame)
                check_pil_size(im, path, max_decode_bytes)
            if 0 in im.size:
                raise BadInputError(f"image has zero size {im.size}", source=str(path))
            _check_pil_depth(im, path)
            mode = im.mode
            im = _pil_to_kept_mode(im)
            array = np.asarray(im)
            spacing = _pil_spacing(im)
    except BadInputError:
        raise
    except Exception as err:  # as in probe_raster: corrupt data surfaces as many exception types
        raise BadInputError(f"corrupt or unreadable image ({first_line(err)})", source=str(path)) from None
    bits = 16 if mode.startswith("I;16") or (mode == "I" and fmt == "png") else None
    metadata = {"format": fmt, "photometric": photometric_of(array), "spacing": spacing, "mode": mode}
    if bits:
        metadata["bits_stored"] = bits
    return array, metadata


def check_pil_size(im, path: Path, max_decode_bytes: int | None) -> None:
    """Width x height x Pillow's bytes per pixel from the header, against the decode budget."""
    width, height = im.size
    check_decode_size(path, (height, width), _PIL_PIXEL_BYTES.get(im.mode, 4), volume=False, budget=max_decode_bytes)


def _pil_to_kept_mode(im):
    """Convert PIL modes we do not keep: bilevel/palette/CMYK/alpha -> L or RGB."""
    if im.mode in ("L", "RGB", "F", "I") or im.mode.startswith("I;16"):
        return im
    if im.mode in ("1", "LA"):
        return im.convert("L")
    if im.mode == "P":
        return im.convert("RGBA" if "transparency" in im.info else "RGB").convert("RGB")
    return im.convert("RGB")  # RGBA, CMYK, YCbCr, LAB, HSV


def _check_pil_depth(im, path: Path) -> None:
    """Pillow reduces 16-bit colour to 8 bits silently: refuse it rather than lose precision."""
    if im.format == "PNG" and im.mode in ("RGB", "RGBA") and _png_bit_depth(path) == 16:
        raise BadInputError("16-bit colour PNG is not supported (Pillow would reduce it to 8 bits)", source=str(path))
    if im.format == "TIFF" and im.mode in ("RGB", "RGBA"):
        bits = im.tag_v2.get(258, (8,))
        if max(bits if isinstance(bits, tuple) else (bits,)) > 8:
            raise BadInputError("16-bit colour TIFF is not supported (Pillow would reduce it to 8 bits)", source=str(path))


def _png_bit_depth(path: Path) -> int:
    with open(path, "rb") as f:
        header = f.read(25)
    return header[24] if len(header) == 25 else 8  # IHDR bit depth byte


def _pil_spacing(im) -> tuple[float, float] | None:
    """Pixel spacing in mm from a DPI tag, if any (rarely meaningful for medical exports)."""
    dpi = im.info.get("dpi")
    try:
        if dpi and float(dpi[0]) > 1 and float(dpi[1]) > 1 and tuple(dpi) != (72, 72):
            return (25.4 / float(dpi[1]), 25.4 / float(dpi[0]))
    except (TypeError, ValueError, IndexError):
        pass
    return None
