"""Synthetic phantoms: greenfm's built-in data set, for the demo and the tests.

``generate_phantoms`` writes chest radiographs (8-bit PNG) or chest CT volumes
(int16 Hounsfield units, ``.nii.gz``) with a free-text report per image and a
``manifest.csv`` in greenfm's manifest format:

- ``path`` (relative to the manifest), ``patient_id``, ``study_id``, ``id``, ``report``;
- one column per finding holding the *report's* label: 1 stated, -1 hedged,
  0 negated or not mentioned (empty instead with ``unmentioned="missing"``);
- ``meta_true_<finding>`` the pixel truth (0/1), ``meta_size_<finding>`` its
  defining measurement in mm (CXR cardiomegaly: the cardiothoracic ratio),
  ``meta_contrast_<finding>`` how opaque or lucent it is (per finding, see
  ``cxr`` and ``ct``), ``meta_reader_error_<finding>`` 1 where the report's label
  disagrees with the pixel truth, ``meta_reader_error`` their count per image,
  ``meta_pixel_mm`` (CXR), and ``meta_site``, ``meta_view``, ``meta_sex``,
  ``meta_age``, ``meta_study_index``, ``meta_day`` ...

The report's label equals the pixel truth except for reader errors, which happen
with chance ``reader_error`` per image and finding (default 0.03; see ``reading``).

Patients have 1-4 studies with consistent anatomy; chronic findings persist and
acute ones come and go. ``site`` picks the population and acquisition chain (see
``sites``), so a model can start on one site and adapt to another.
Output is a pure function of the arguments: the same seed gives byte-identical
files, whatever the number of worker processes.

Radiograph findings: cardiomegaly, pleural_effusion, pneumothorax, consolidation,
lung_nodule. CT findings: lung_nodule, pleural_effusion, consolidation,
pericardial_effusion, emphysema, cardiomegaly.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import struct
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from greenfm.data.phantoms.ct import CT_FINDING_IDS, ct_patient, write_nifti
from greenfm.data.phantoms.cxr import CXR_FINDING_IDS, cxr_patient
from greenfm.data.phantoms.reading import DEFAULT_READER_ERROR
from greenfm.data.phantoms.sites import SiteProfile, get_site
from greenfm.errors import ConfigError, GreenfmError
from greenfm.io_safety import atomic_output, write_bytes_atomic

KINDS = ("cxr", "ct")
DEFAULT_SIZE = {"cxr": 128, "ct": 96}
SETTINGS_FILE = "phantoms.json"
MANIFEST_FILE = "manifest.csv"
_PARALLEL_FROM = 1500
"""Estimated images from which worker processes pay for their start-up."""


def finding_ids(kind: str) -> tuple[str, ...]:
    """The manifest finding columns of a phantom kind, in column order."""
    if kind not in KINDS:
        raise ConfigError(f"unknown phantom kind {kind!r}; choose one of {', '.join(KINDS)}")
    return CXR_FINDING_IDS if kind == "cxr" else CT_FINDING_IDS


def generate_phantoms(
    out_dir: str | Path,
    *,
    kind: str = "cxr",
    n_patients: int = 200,
    images_per_patient: tuple[int, int] = (1, 4),
    size: int | None = None,
    seed: int = 0,
    site: str | SiteProfile = "A",
    unmentioned: str = "absent",
    workers: int | None = None,
    reader_error: float = DEFAULT_READER_ERROR,
) -> Path:
    """Write a phantom data set into ``out_dir`` and return the path of its ``manifest.csv``.

    ``size`` is the image side in pixels for ``cxr`` (default 128; 32-512) and the
    in-plane voxel count for ``ct`` (default 96, with ``size // 2`` slices of 3 mm).
    ``images_per_patient`` bounds the studies per patient (inclusive).
    ``unmentioned="missing"`` leaves a finding's label empty when its report does
    not mention it. ``reader_error`` is the chance, per image and finding, that the
    report's label disagrees with the pixel truth (0 makes labels equal the truth).
    ``workers`` processes render in parallel (default: all cores
    for large jobs, one otherwise). An existing phantom folder is replaced; any
    other non-empty folder is refused.
    """
    kind = str(kind).lower()
    if kind not in KINDS:
        raise ConfigError(f"unknown phantom kind {kind!r}; choose one of {', '.join(KINDS)}")
    profile = get_site(site)
    size = DEFAULT_SIZE[kind] if size is None else int(size)
    limits = (32, 512) if kind == "cxr" else (32, 256)
    if not limits[0] <= size <= limits[1]:
        raise ConfigError(f"phantom size {size} is outside {limits[0]}-{limits[1]} for kind {kind!r}")
    if int(n_patients) < 1:
        raise ConfigError(f"n_patients must be at least 1, got {n_patients}")
    lo, hi = (int(v) for v in images_per_patient)
    if not 1 <= lo <= hi <= 12:
        raise ConfigError(f"images_per_patient must be (min, max) with 1 <= min <= max <= 12, got {images_per_patient}")
    if unmentioned not in ("absent", "missing"):
        raise ConfigError(f"unmentioned must be 'absent' or 'missing', got {unmentioned!r}")
    if not 0.0 <= float(reader_error) <= 0.5:
        raise ConfigError(f"reader_error must be between 0 and 0.5, got {reader_error}")
    if int(seed) < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed}")

    out = _prepare(Path(out_dir))
    settings = {"kind": kind, "n_patients": int(n_patients), "images_per_patient": [lo, hi], "size": size,
                "seed": int(seed), "unmentioned": unmentioned, "reader_error": float(reader_error),
                "findings": list(finding_ids(kind)),
                "site": asdict(profile)}
    # Written first: it marks the folder as a phantom set, so an interrupted run can be redone in place.
    write_bytes_atomic(out / SETTINGS_FILE, (json.dumps(settings, indent=2, sort_keys=True) + "\n").encode())
    job = _Job(kind, str(out), profile, size, int(seed), (lo, hi), unmentioned == "missing", float(reader_error))
    n_patients = int(n_patients)
    n_workers = _worker_count(workers, n_patients * (lo + hi) / 2 * (1 if kind == "cxr" else 60))
    step = max(1, min(64, -(-n_patients // (4 * n_workers))))
    chunks = [range(a, min(a + step, n_patients)) for a in range(0, n_patients, step)]
    if n_workers > 1 and len(chunks) > 1:
        context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(n_workers, mp_context=context) as pool:
            parts = list(pool.map(job.run, chunks))
    else:
        parts = [job.run(chunk) for chunk in chunks]
    table = pd.DataFrame([row for part in parts for row in part])
    for name in finding_ids(kind):
        table[name] = table[name].astype("Int64")  # "1" / "0" / "-1" / empty, not floats
    manifest = out / MANIFEST_FILE
    with atomic_output(manifest) as tmp:
        table.to_csv(tmp, index=False, lineterminator="\n")
    return manifest


@dataclass(frozen=True)
class _Job:
    """Everything a worker needs to draw and write a range of patients (picklable)."""

    kind: str
    out_dir: str
    site: SiteProfile
    size: int
    seed: int
    studies: tuple[int, int]
    unmentioned_missing: bool
    reader_error: float = DEFAULT_READER_ERROR

    def run(self, patients: range) -> list[dict]:
        rows = []
        site_key = zlib.crc32(self.site.name.encode())
        for i in patients:
            # One independent stream per patient: results do not depend on how patients are split.
            stream = np.random.SeedSequence(self.seed, spawn_key=(site_key, KINDS.index(self.kind), i))
            rng = np.random.default_rng(stream)
            tag = re.sub(r"[^A-Za-z0-9]", "", self.site.name) or "site"
            patient_id = f"{self.kind}{tag}-{i + 1:05d}"
            n_studies = int(rng.integers(self.studies[0], self.studies[1] + 1))
            rows += self._patient(rng, patient_id, n_studies)
        return rows

    def _patient(self, rng: np.random.Generator, patient_id: str, n_studies: int) -> list[dict]:
        folder = Path(self.out_dir) / "images" / patient_id
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        if self.kind == "cxr":
            for row, image in cxr_patient(rng, patient_id, n_studies, self.site, self.size,
                                          unmentioned_missing=self.unmentioned_missing,
                                          reader_error=self.reader_error):
                rel = f"images/{patient_id}/{row['id']}.png"
                write_bytes_atomic(Path(self.out_dir) / rel, _png(image))  # no 0-byte PNG on a full disk
                rows.append({"path": rel, **row})
        else:
            for row, volume, spacing in ct_patient(rng, patient_id, n_studies, self.site, self.size,
                                                   unmentioned_missing=self.unmentioned_missing,
                                                   reader_error=self.reader_error):
                rel = f"images/{patient_id}/{row['id']}.nii.gz"
                with atomic_output(Path(self.out_dir) / rel) as tmp:
                    write_nifti(tmp, volume, spacing)
                rows.append({"path": rel, **row})
        return rows


def _png(image: np.ndarray) -> bytes:
    """8-bit grey PNG bytes, encoded by hand.

    Every row uses the PNG "up" filter and zlib's run-length strategy at level 1:
    about three times faster than PIL's adaptive filtering at a similar file size
    (``benchmarks/bench_phantoms.py``). Any PNG reader decodes it.
    """
    height, width = image.shape
    rows = np.empty((height, width + 1), dtype=np.uint8)
    rows[:, 0] = 2  # filter type "up": each byte minus the byte above it (mod 256)
    rows[0, 1:] = image[0]
    np.subtract(image[1:], image[:-1], out=rows[1:, 1:])
    packer = zlib.compressobj(1, zlib.DEFLATED, 15, 8, zlib.Z_RLE)
    data = packer.compress(rows.tobytes()) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale, not interlaced
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _prepare(out: Path) -> Path:
    """Create the folder, or clear a previous phantom set in it; refuse anything else."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / SETTINGS_FILE).is_file():
            raise ConfigError(f"{out} is not empty and holds no phantom set ({SETTINGS_FILE}); choose another folder")
        shutil.rmtree(out / "images", ignore_errors=True)
        for name in (MANIFEST_FILE, SETTINGS_FILE):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _worker_count(workers: int | None, images: float) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if workers is None:
        return min(cores, 8) if images >= _PARALLEL_FROM else 1
    if int(workers) < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    return int(workers)


@dataclass(frozen=True)
class PhantomSummary:
    """What a phantom manifest holds: counts, and per finding the report-label and true rates."""

    kind: str
    sites: tuple[str, ...]
    n_images: int
    n_patients: int
    n_studies: int
    positive: dict[str, float]
    """Share of images whose report states the finding (label 1)."""
    uncertain: dict[str, float]
    """Share of images whose report hedges on it (label -1)."""
    true: dict[str, float]
    """Share of images where it is drawn (``meta_true_*``)."""
    normal: float
    """Share of images with no finding drawn."""

    def __str__(self) -> str:
        lines = [f"{self.kind} phantoms, site {'+'.join(self.sites)}: {self.n_images} images, "
                 f"{self.n_studies} studies, {self.n_patients} patients; {self.normal:.0%} normal",
                 f"  {'finding':22s} {'reported':>9s} {'hedged':>7s} {'drawn':>6s}"]
        for name in self.positive:
            lines.append(f"  {name:22s} {self.positive[name]:9.1%} {self.uncertain[name]:7.1%} {self.true[name]:6.1%}")
        return "\n".join(lines)


def summarize_phantoms(manifest: str | Path | pd.DataFrame) -> PhantomSummary:
    """Counts and prevalences of a phantom manifest (a path or an already loaded table)."""
    if isinstance(manifest, pd.DataFrame):
        table = manifest
    else:
        path = Path(manifest)
        if path.is_dir():
            path = path / MANIFEST_FILE
        if not path.is_file():
            raise GreenfmError(f"{path}: phantom manifest not found")
        table = pd.read_csv(path)
    truths = [c.removeprefix("meta_true_") for c in table.columns if str(c).startswith("meta_true_")]
    if not truths:
        raise GreenfmError("not a phantom manifest: it has no meta_true_* columns")
    kind = "cxr" if str(table["path"].iloc[0]).endswith(".png") else "ct"
    labels = {name: pd.to_numeric(table[name], errors="coerce") for name in truths}
    true = table[[f"meta_true_{name}" for name in truths]].to_numpy()
    return PhantomSummary(
        kind=kind,
        sites=tuple(sorted(str(s) for s in table["meta_site"].unique())) if "meta_site" in table else (),
        n_images=len(table),
        n_patients=int(table["patient_id"].nunique()),
        n_studies=int(table["study_id"].nunique()) if "study_id" in table else len(table),
        positive={name: float((labels[name] == 1).mean()) for name in truths},
        uncertain={name: float((labels[name] == -1).mean()) for name in truths},
        true={name: float(table[f"meta_true_{name}"].mean()) for name in truths},
        normal=float((true.sum(axis=1) == 0).mean()),
    )
