"""DICOM series folders -> volumes.

A folder (searched recursively) may hold several series and stray files.
Files are grouped by Series Instance UID; within a series, slices are sorted by
their Image Position (Patient) projected on the slice normal (the cross product
of the Image Orientation (Patient) row and column vectors), falling back to
Instance Number, then file name. Files that do not look like DICOM and DICOM
objects without pixels (DICOMDIR, structured reports, RT plans) are left out
and listed in ``ignored`` when asked; a file named or marked as DICOM that
cannot be read is an error naming the file, or is skipped and counted in
``problems``, never silently dropped.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from greenfm.data.dicom import (
    PIXEL_TAGS,
    check_dicom_size,
    check_has_pixels,
    check_pixel_data,
    decode_pixels,
    expects_pixels,
    has_preamble,
    header_text,
    header_summary,
    lps_affine,
    modality_values,
    number_of_frames,
    orientation_vectors,
    pixel_spacing,
    probe_dicom,
    read_dataset,
    read_header,
)
from greenfm.data.decode_budget import check_decode_size
from greenfm.data.image_data import Volume
from greenfm.errors import BadInputError

log = logging.getLogger(__name__)

_DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
_SPACING_TOLERANCE = 0.01  # relative spread of slice gaps still called uniform


@dataclass
class DicomSeries:
    """The files of one series, sorted along the slice normal, with its identifiers.

    ``uid`` is the Series Instance UID; ``<uid>#<n>`` for the n-th stack of a
    series holding several (see ``find_series``); the folder path relative to
    the scanned folder when the files carry no UID.
    """

    uid: str
    files: list[Path]
    headers: list[Dataset] = field(repr=False)
    patient_id: str = ""
    study_uid: str = ""
    modality: str = ""
    description: str = ""

    @property
    def folder(self) -> Path:
        """The deepest folder holding every file of the series."""
        parents = [f.parent for f in self.files]
        common = parents[0]
        while not all(p == common or common in p.parents for p in parents):
            common = common.parent
        return common


def looks_like_dicom(path: Path) -> bool:
    """Cheap filter for folder scans: the DICM marker, or a DICOM file extension."""
    if path.name.upper() == "DICOMDIR" or path.name.startswith("."):
        return False
    return has_preamble(path) or path.suffix.lower() in _DICOM_SUFFIXES


def dicom_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and looks_like_dicom(p))


def probe_dicom_folder(folder: Path, *, max_decode_bytes: int | None = None) -> None:
    """Cheap check of a series folder: it holds a DICOM image whose header is sound."""
    for path in sorted(folder.rglob("*")):
        if path.is_file() and looks_like_dicom(path):
            probe_dicom(path, max_decode_bytes=max_decode_bytes)
            return
    raise BadInputError("folder holds no DICOM files", source=str(folder))


def find_series(
    folder: str | Path,
    *,
    problems: list[BadInputError] | None = None,
    ignored: list[Path] | None = None,
) -> list[DicomSeries]:
    """Every image series under ``folder``, each with its slices sorted; largest first.

    An unreadable DICOM file is an error, or is skipped and appended to
    ``problems`` when that list is given. Files left out on purpose (not
    DICOM-looking, or DICOM without pixels) are appended to ``ignored``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise BadInputError("not a folder", source=str(folder))
    groups: dict[str, list[tuple[Path, Dataset]]] = defaultdict(list)
    candidates = dicom_files(folder)
    if ignored is not None:
        chosen = set(candidates)
        ignored.extend(p for p in sorted(folder.rglob("*")) if p.is_file() and p not in chosen
                       and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    for path in candidates:
        try:
            ds = read_header(path)
            if not any(tag in ds for tag in PIXEL_TAGS) and not expects_pixels(ds):
                if ignored is not None:
                    ignored.append(path)
                continue  # DICOMDIR, structured report, RT plan...
            check_pixel_data(ds, path)
            check_dicom_size(ds, path, frames=1)  # one slice against the 2-D budget; the series is checked on reading
        except BadInputError as err:
            if problems is None:
                raise
            problems.append(err)
            continue
        groups[_group_key(ds, path, folder)].append((path, ds))
    if not groups:
        raise BadInputError("folder holds no DICOM images", source=str(folder))
    parts: dict[str, int] = defaultdict(int)
    for uid, *_ in groups:
        parts[uid] += 1
    numbered: dict[str, int] = defaultdict(int)
    series = []
    for (uid, *_), members in sorted(groups.items(), key=lambda kv: (kv[0][0], str(kv[1][0][0]))):
        numbered[uid] += 1
        try:
            members = _sorted_slices(members)
        except BadInputError as err:
            if problems is None:
                raise
            problems.append(err)
            continue
        first = header_summary(members[0][1])
        series.append(
            DicomSeries(
                uid=uid if parts[uid] == 1 else f"{uid}#{numbered[uid]}",
                files=[p for p, _ in members],
                headers=[ds for _, ds in members],
                patient_id=first["patient_id"],
                study_uid=first["study_uid"],
                modality=first["modality"],
                description=first["series_description"],
            )
        )
    return sorted(series, key=lambda s: (-len(s.files), s.uid))


def read_dicom_series(
    folder: str | Path, *, series_uid: str | None = None, max_decode_bytes: int | None = None
) -> Volume:
    """The one series in ``folder`` (or the one named by ``series_uid``) as a volume.

    The stacked size (every slice's Rows x Columns x bits) is checked against
    the decode budget before any slice is decoded.
    """
    folder = Path(folder)
    found = find_series(folder)
    if series_uid is not None:
        found = [s for s in found if s.uid == series_uid]
        if not found:
            raise BadInputError(f"holds no series {series_uid!r}", source=str(folder))
    if len(found) > 1:
        listing = ", ".join(f"{header_text(s.uid)} ({len(s.files)} slice(s))" for s in found[:3])
        raise BadInputError(
            f"holds {len(found)} series ({listing}); pass series_uid= or import the folder (one row per series)",
            source=str(folder),
        )
    return series_volume(found[0], max_decode_bytes=max_decode_bytes)


def series_volume(series: DicomSeries, *, max_decode_bytes: int | None = None) -> Volume:
    """Decode and stack the slices of one series: (D, H, W) in modality units (CT in HU)."""
    headers, files = series.headers, series.files
    first = headers[0]
    _check_consistent(series)
    rows, cols = int(first.Rows), int(first.Columns)
    bits = max(int(first.get("BitsAllocated", 16) or 16), 16)  # slices are stacked as int16 at least
    check_decode_size(series.folder, (len(files), rows, cols), bits / 8, volume=True, budget=max_decode_bytes)
    slices = []
    for path, header in zip(files, headers):
        if number_of_frames(header) > 1:
            raise BadInputError("multi-frame file inside a series folder; read it on its own", source=str(path))
        ds = read_dataset(path, probe=False)  # find_series already checked every header
        values, _ = modality_values(decode_pixels(ds, path), ds, None)
        slices.append(_compact(values))
    array = np.stack(slices)  # int16 when every slice fits, else int32 or float32 (numpy promotes)
    if array.dtype == np.int32 and array.min() >= 0 and array.max() <= 65535:
        array = array.astype(np.uint16)  # e.g. 16-bit MR: unsigned values above int16

    rows, cols = orientation_vectors(first)
    normal = np.cross(rows, cols)
    dy, dx = pixel_spacing(first) or (1.0, 1.0)
    positions = _positions(headers)
    uniform = True
    if positions is not None and len(files) > 1:
        gaps = np.diff(positions @ normal)
        step = (positions[-1] - positions[0]) / (len(files) - 1)
        uniform = bool(np.ptp(gaps) <= _SPACING_TOLERANCE * abs(np.median(gaps)))
        if not uniform:
            log.warning("%s: slice gaps vary from %.3g to %.3g mm; using their mean", series.folder, gaps.min(), gaps.max())
    else:
        step = normal * float(first.get("SpacingBetweenSlices") or first.get("SliceThickness") or 1.0)
    origin = positions[0] if positions is not None else np.zeros(3)
    metadata = header_summary(first) | {
        "format": "dicom-series",
        "slices": len(files),
        "slice_spacing_uniform": uniform,
        "sorted_by": "position" if positions is not None else "instance number",
        "rescaled": "RescaleSlope" in first or "ModalityLUTSequence" in first,
    }
    affine = lps_affine(origin, rows, cols, step, dy, dx)
    return Volume(array, (float(np.linalg.norm(step)), dy, dx), affine, metadata)


def _group_key(ds: Dataset, path: Path, root: Path) -> tuple:
    """Series Instance UID (else the file's folder), split further by orientation and echo.

    One series may hold several stacks: a three-plane localizer, or echoes of
    a multi-echo sequence; each becomes its own group (``<uid>#<n>``).
    """
    uid = str(ds.get("SeriesInstanceUID", "") or "")
    if not uid:
        relative = path.parent.relative_to(root).as_posix()
        uid = root.name if relative == "." else relative
    rows, cols = orientation_vectors(ds)
    orientation = tuple(np.round(np.concatenate([rows, cols]), 3) + 0.0)  # + 0.0 folds -0.0 into 0.0
    return uid, orientation, str(ds.get("EchoNumbers", ""))


def _compact(values: np.ndarray) -> np.ndarray:
    """One slice in the smallest exact type (int16, else int32, else float32): keeps stacks small."""
    if values.dtype.kind in "iu" and values.size:
        lo, hi = int(values.min()), int(values.max())
        if -(2**15) <= lo and hi < 2**15:
            return values.astype(np.int16, copy=False)
        if -(2**31) <= lo and hi < 2**31:
            return values.astype(np.int32, copy=False)
    return values.astype(np.float32, copy=False)


def _sorted_slices(members: list[tuple[Path, Dataset]]) -> list[tuple[Path, Dataset]]:
    positions = _positions([ds for _, ds in members])
    if positions is not None:
        rows, cols = orientation_vectors(members[0][1])
        along = positions @ np.cross(rows, cols)
        order = np.argsort(along, kind="stable")
        members = [members[i] for i in order]
        sorted_along = along[order]
        if len(members) > 1 and np.any(np.isclose(np.diff(sorted_along), 0.0, atol=1e-4)):
            n_dup = int(np.sum(np.isclose(np.diff(sorted_along), 0.0, atol=1e-4)))
            raise BadInputError(
                f"series {header_text(members[0][1].get('SeriesInstanceUID', ''))} has {n_dup} slice(s) at an already used "
                "position (several volumes in one series: echoes, phases or time points?)",
                source=str(members[0][0].parent),
            )
        return members

    def instance(item: tuple[Path, Dataset]) -> tuple[int, str]:
        try:
            return int(item[1].get("InstanceNumber")), item[0].name
        except (TypeError, ValueError):
            return 0, item[0].name

    return sorted(members, key=instance)


def _positions(headers: list[Dataset]) -> np.ndarray | None:
    """Image Position (Patient) of every slice, or None when any lacks it."""
    try:
        values = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in headers])
    except (AttributeError, TypeError, ValueError):
        return None
    return values if values.shape == (len(headers), 3) else None


def _check_consistent(series: DicomSeries) -> None:
    """Every slice MONOCHROME2, of the most common size, and oriented as the first."""
    first = series.headers[0]
    sizes = Counter((int(ds.Rows), int(ds.Columns)) for ds in series.headers)
    shape = sizes.most_common(1)[0][0]  # name the odd slice out, not the first one
    rows, cols = orientation_vectors(first)
    for path, ds in zip(series.files, series.headers):
        check_has_pixels(ds, path)
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
        if photometric != "MONOCHROME2":
            raise BadInputError(f"a volume slice must be MONOCHROME2, not {header_text(photometric)}", source=str(path))
        if (int(ds.Rows), int(ds.Columns)) != shape:
            raise BadInputError(
                f"slice is {int(ds.Rows)}x{int(ds.Columns)} but the series' other slices are {shape[0]}x{shape[1]}",
                source=str(path),
            )
        r, c = orientation_vectors(ds)
        if not (np.allclose(r, rows, atol=1e-3) and np.allclose(c, cols, atol=1e-3)):
            raise BadInputError("slice orientation differs from the series' first slice", source=str(path))
