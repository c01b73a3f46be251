"""Offline colour-fundus preprocessing (METHODS 2.4), as RETFound-Green prepares its images.

Each photograph is cropped to the fundus, padded square with black and resized to
1024 x 1024 with Lanczos, once, into new files (JPEG q90 by default):

1. the per-pixel channel mean, on a 0-255 scale, minus its own 5% quantile (the
   background level of the frame);
2. keep the rows and the columns whose mean of that map exceeds 5 (from the first such
   row or column to the last), then widen the box by 2.5% of its height and width on
   each side, within the image;
3. zero-pad the crop to a centred square and resize it to ``size`` with Lanczos.

The published description leaves two details open, read here as stated (assumed): the
threshold applies to the *mean* of a row or column, and the margin is a fraction of the
crop, not of the image. An image with no row or column above the threshold (all dark)
is kept whole. ``preprocess_fundus`` writes the files and a manifest beside them and
never writes the source: ``greenfm data preprocess --data m.csv --out folder``.
"""

from __future__ import annotations

import json
import os
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from greenfm.config import ExistingPath, GreenfmConfig
from greenfm.errors import BadInputError
from greenfm.io_safety import atomic_output

SUMMARY = "preprocess.json"
MANIFEST = "manifest.csv"
IMAGES = "images"


class FundusPreprocessConfig(GreenfmConfig):
    """Options of ``greenfm data preprocess`` (defaults: the official values)."""

    data: ExistingPath = Field(..., description="Manifest of the colour fundus photographs (never overwritten).")
    size: int = Field(1024, ge=8, description="Side of the square output images (Lanczos).")
    threshold: float = Field(
        5.0, ge=0, description="Rows and columns whose mean brightness (0-255, above the 5% quantile) exceeds this are kept."
    )
    quantile: float = Field(0.05, ge=0, lt=1, description="Quantile of the channel-mean map taken as the background.")
    margin: float = Field(0.025, ge=0, le=0.5, description="Margin added around the crop, as a fraction of its side.")
    format: Literal["jpeg", "png"] = Field("jpeg", description="Output format: jpeg (quality --quality, as the official) or png.")
    quality: int = Field(90, ge=1, le=100, description="JPEG quality.")
    workers: int | None = Field(None, ge=1, description="Processes (default: usable cores).")
    skip_bad: bool = Field(False, description="Skip unreadable images and count them.")


@dataclass
class PreprocessSummary:
    """What ``preprocess_fundus`` wrote."""

    manifest: Path
    images: int
    skipped: list[str]
    size: int

    def __str__(self) -> str:
        skipped = f"; skipped {len(self.skipped)} unreadable image(s)" if self.skipped else ""
        return f"{self.images} fundus images cropped, padded square and resized to {self.size} px{skipped}; manifest {self.manifest}"


def to_unit_255(image: np.ndarray) -> np.ndarray:
    """An image on a 0-255 float scale: 8-bit as is, 16-bit / 257, [0, 1] floats x 255, else min-max."""
    arr = np.asarray(image)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32)
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 257.0
    arr = arr.astype(np.float32)
    lo, hi = float(arr.min()), float(arr.max())
    if lo >= 0.0 and hi <= 1.0:
        return arr * 255.0
    return (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)


def fundus_box(image: np.ndarray, *, threshold: float = 5.0, quantile: float = 0.05,
               margin: float = 0.025) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), end-exclusive: the fundus's bounding box with its margin."""
    scaled = to_unit_255(image)
    brightness = scaled.mean(axis=-1) if scaled.ndim == 3 else scaled
    brightness = brightness - np.quantile(brightness, quantile)
    rows = np.flatnonzero(brightness.mean(axis=1) > threshold)
    cols = np.flatnonzero(brightness.mean(axis=0) > threshold)
    height, width = brightness.shape
    if not rows.size or not cols.size:
        return 0, height, 0, width
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    pad_y, pad_x = round(margin * (bottom - top)), round(margin * (right - left))
    return max(0, top - pad_y), min(height, bottom + pad_y), max(0, left - pad_x), min(width, right + pad_x)


def preprocess_fundus_image(image: np.ndarray, *, size: int = 1024, threshold: float = 5.0, quantile: float = 0.05,
                            margin: float = 0.025) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """One photograph -> (size x size uint8 image, crop box): crop, zero-pad square, Lanczos."""
    from PIL import Image

    image = np.asarray(image)
    if image.ndim == 3:
        image = image[..., 0] if image.shape[-1] == 1 else image[..., :3]  # grey stays grey; alpha dropped
    top, bottom, left, right = fundus_box(image, threshold=threshold, quantile=quantile, margin=margin)
    crop = np.round(to_unit_255(image)[top:bottom, left:right]).clip(0, 255).astype(np.uint8)
    height, width = crop.shape[:2]
    side = max(height, width)
    square = np.zeros((side, side, *crop.shape[2:]), dtype=np.uint8)
    y, x = (side - height) // 2, (side - width) // 2
    square[y : y + height, x : x + width] = crop
    resized = Image.fromarray(square).resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(resized), (top, bottom, left, right)


def preprocess_fundus(config: FundusPreprocessConfig, out: str | Path, *, overwrite: bool = False) -> PreprocessSummary:
    """Preprocess every image of ``config.data`` into ``out/images/`` and write ``out/manifest.csv``.

    The new manifest keeps every column, points ``path`` at the new files and adds
    ``meta_source_path`` and ``meta_fundus_box`` (top, bottom, left, right in source
    pixels). ``out/preprocess.json`` records the options. A folder that holds other files
    is refused; ``overwrite`` replaces only an earlier output of this verb.
    """
    from greenfm.data.manifest import load_manifest

    out = Path(out).expanduser()
    manifest = load_manifest(config.data, skip_bad=config.skip_bad)
    _check_output(out, manifest.table["path"].astype(str).tolist(), overwrite)
    (out / IMAGES).mkdir(parents=True, exist_ok=True)
    table = manifest.table.reset_index(drop=True)
    suffix = ".jpg" if config.format == "jpeg" else ".png"
    targets = [out / IMAGES / f"{row:06d}-{_safe(str(table['id'].iat[row]))}{suffix}" for row in range(len(table))]
    options = config.model_dump(include={"size", "threshold", "quantile", "margin", "format", "quality"})
    jobs = [(str(source), str(target), options) for source, target in zip(table["path"].astype(str), targets)]
    workers = _workers(config.workers, len(jobs))
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_one, jobs, chunksize=16))
    else:
        results = [_one(job) for job in jobs]
    failed = [(row, reason) for row, (box, reason) in enumerate(results) if box is None]
    if failed and not config.skip_bad:
        shown = "; ".join(f"{jobs[row][0]}: {reason}" for row, reason in failed[:3])
        raise BadInputError(f"{len(failed)} of {len(jobs)} images cannot be read: {shown} (use --skip-bad to skip them)")
    keep = [row for row, (box, _) in enumerate(results) if box is not None]
    written = table.iloc[keep].copy()
    written["meta_source_path"] = written["path"]
    written["meta_fundus_box"] = [",".join(str(v) for v in results[row][0]) for row in keep]
    written["path"] = [str(targets[row].relative_to(out)) for row in keep]
    from greenfm.data.manifest import write_table

    write_table(written, out / MANIFEST)
    summary = {"source_manifest": str(Path(config.data).resolve()), "images": len(keep),
               "skipped": [jobs[row][0] for row, _ in failed], "options": options,
               "method": "METHODS 2.4: crop to rows/columns above the threshold, margin, zero-pad square, Lanczos"}  # fmt: skip
    (out / SUMMARY).write_text(json.dumps(summary, indent=2))
    return PreprocessSummary(out / MANIFEST, len(keep), summary["skipped"], config.size)


def _one(job: tuple[str, str, dict[str, Any]]) -> tuple[tuple[int, int, int, int] | None, str]:
    """Read, preprocess and write one image (in a worker or in-process); (box, "") or (None, reason)."""
    from PIL import Image

    from greenfm.data.readers import read_image

    source, target, options = job
    try:
        array = read_image(source).array
    except BadInputError as err:
        return None, str(err).removeprefix(f"{source}: ")
    image, box = preprocess_fundus_image(array, size=options["size"], threshold=options["threshold"],
                                         quantile=options["quantile"], margin=options["margin"])  # fmt: skip
    pil = Image.fromarray(image)
    with atomic_output(target) as tmp:  # a full disk: one line, no partial image
        if options["format"] == "jpeg":
            pil.save(tmp, format="JPEG", quality=options["quality"])
        else:
            pil.save(tmp, format="PNG")
    return box, ""


def _check_output(out: Path, sources: list[str], overwrite: bool) -> None:
    resolved = {str(Path(s).resolve()) for s in sources}
    if str(out.resolve()) in resolved or any(str((out / IMAGES).resolve()) == str(Path(s).resolve().parent)
                                             for s in sources):  # fmt: skip
        raise BadInputError("the output folder would overwrite the source images", source=str(out))
    if out.exists() and any(out.iterdir()):
        if not (out / SUMMARY).is_file():
            raise BadInputError("is not empty and holds no earlier preprocessing output; choose a new folder", source=str(out))
        if not overwrite:
            raise BadInputError("already holds preprocessed images; pass --overwrite to replace them", source=str(out))
        import shutil

        shutil.rmtree(out / IMAGES, ignore_errors=True)


def _workers(workers: int | None, n: int) -> int:
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(int(workers), n // 16 or 1))


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80] or "image"
