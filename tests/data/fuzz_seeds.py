"""Seed files and mutations for fuzzing the readers; shared by the property tests and
``benchmarks/fuzz_readers.py``.

``seeds(folder)`` writes one small valid file (or folder) per reader and returns
its bytes; ``mutate(data, edits)`` applies byte edits; ``exercise(reader, path)``
runs the probe and the full read and returns ``"ok"`` or ``"refused"`` (a
one-line ``BadInputError`` naming the file). Anything else raised is a finding.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pandas as pd
from PIL import Image
from pydicom.data import get_testdata_file

from greenfm.data.manifest import load_manifest
from greenfm.data.readers import probe, read_image, read_volume
from greenfm.errors import BadInputError

READERS = ("png", "png16", "jpeg", "tiff", "dicom", "dicom-series", "nifti", "nifti-gz", "nrrd", "nrrd-gz",
           "npy", "npz", "manifest")  # fmt: skip
SUFFIX = {"png": ".png", "png16": ".png", "jpeg": ".jpg", "tiff": ".tif", "dicom": ".dcm", "dicom-series": ".dcm",
          "nifti": ".nii", "nifti-gz": ".nii.gz", "nrrd": ".nrrd", "nrrd-gz": ".nrrd", "npy": ".npy", "npz": ".npz",
          "manifest": ".csv"}  # fmt: skip
VOLUMES = ("dicom-series", "nifti", "nifti-gz", "nrrd", "nrrd-gz")
SERIES_SLICES = 3


def seeds(folder: Path) -> dict[str, bytes]:
    """One small valid file per reader (the series: the bytes of its middle slice)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (24, 20), dtype=np.uint8)
    out: dict[str, bytes] = {}
    for name, image, fmt in (("png", grey, "PNG"), ("png16", grey.astype(np.uint16) * 257, "PNG"),
                             ("jpeg", np.stack([grey] * 3, -1), "JPEG"), ("tiff", grey, "TIFF")):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format=fmt)
        out[name] = buffer.getvalue()
    out["dicom"] = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    out["dicom-series"] = out["dicom"]
    volume = rng.integers(-100, 100, (6, 5, 4)).astype(np.int16)
    for name, suffix in (("nifti", ".nii"), ("nifti-gz", ".nii.gz")):
        path = folder / f"seed{suffix}"
        nib.save(nib.Nifti1Image(volume, np.eye(4)), str(path))
        out[name] = path.read_bytes()
    for name, encoding in (("nrrd", "raw"), ("nrrd-gz", "gzip")):
        path = folder / f"seed-{name}.nrrd"
        nrrd.write(str(path), volume, {"encoding": encoding, "space": "left-posterior-superior"})
        out[name] = path.read_bytes()
    buffer = io.BytesIO()
    np.save(buffer, grey)
    out["npy"] = buffer.getvalue()
    buffer = io.BytesIO()
    np.savez_compressed(buffer, image=grey, spacing=np.array([1.0, 1.0, 1.0]))
    out["npz"] = buffer.getvalue()
    (folder / "img.png").write_bytes(out["png"])
    out["manifest"] = pd.DataFrame({
        "path": ["img.png", "img.png", "missing.png"], "patient_id": ["p1", "p2", "p3"], "id": ["a", "b", "c"],
        "split": ["train", "val", "test"], "cardiomegaly": [1, 0, -1], "report": ["Big heart.", "Clear.", ""],
    }).to_csv(index=False).encode()  # fmt: skip
    return out


def mutate(data: bytes, edits: list[tuple[str, int, bytes]]) -> bytes:
    """Apply edits in order: ("flip"|"set"|"insert", position, bytes) or ("cut", position, b"")."""
    buffer = bytearray(data)
    for kind, position, payload in edits:
        i = position % (len(buffer) + 1)
        if kind == "cut":
            del buffer[i:]
        elif kind == "insert":
            buffer[i:i] = payload
        elif kind == "set":
            buffer[i : i + len(payload)] = payload
        elif kind == "flip" and buffer:
            j = min(i, len(buffer) - 1)
            buffer[j] ^= payload[0] if payload else 0xFF
    return bytes(buffer)


def place(reader: str, data: bytes, folder: Path, seed_bytes: bytes) -> Path:
    """Write ``data`` where ``reader`` expects it; a series gets two intact slices around it."""
    folder.mkdir(parents=True, exist_ok=True)
    if reader == "dicom-series":
        series = folder / "series"
        shutil.rmtree(series, ignore_errors=True)
        series.mkdir()
        for i in range(SERIES_SLICES):
            (series / f"slice{i}.dcm").write_bytes(data if i == SERIES_SLICES // 2 else _slice(seed_bytes, i))
        return series
    if reader == "manifest":
        (folder / "img.png").write_bytes(_png())
    path = folder / f"input{SUFFIX[reader]}"
    path.write_bytes(data)
    return path


def exercise(reader: str, path: Path) -> str:
    """Probe and read; ``"ok"`` or ``"refused"``. Raises AssertionError for a message that is not
    one line naming the input; lets any other exception through (a finding)."""
    try:
        if reader == "manifest":
            load_manifest(path, skip_bad=True)
            return "ok"
        probe(path)
        if reader in VOLUMES:
            read_volume(path)
        else:
            read_image(path, **({"frame": 0} if reader == "tiff" else {}))
        return "ok"
    except BadInputError as err:
        message = str(err)
        assert "\n" not in message, f"multi-line error: {message!r}"
        assert str(path) in message, f"error does not name {path}: {message!r}"
        assert "unexpected error while reading" not in message, f"an exception nothing handles: {message!r}"
        return "refused"


def _slice(seed: bytes, i: int) -> bytes:
    """A copy of the seed slice moved along z, so the series has distinct positions."""
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(seed))
    ds.ImagePositionPatient = [0.0, 0.0, float(i) * 5.0]
    ds.InstanceNumber = i + 1
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()

