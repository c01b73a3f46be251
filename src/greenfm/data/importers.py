"""Turn a source (folder tree, DICOM folder, NIfTI folder, MedMNIST ``.npz``) into a manifest.

``import_source(source, out_manifest)`` is ``greenfm data import SOURCE --out
manifest.csv``. What each kind writes:

- ``folders``: a class-per-folder tree, ``SOURCE/<class>/<files>``, optionally
  under split folders (``SOURCE/{train,val,test}/<class>/...``, which fill the
  ``split`` column). One row per image; one finding column per class, 1 for the
  image's class and 0 for the others (one-hot, which multi-label probes read
  directly); no class folders -> no finding columns. Images carry no patient
  ids, so ``patient_id`` is the image id (DICOM files: their PatientID).
- ``dicom``: a folder of DICOM files, grouped into series by Series Instance
  UID; one row per series with ``patient_id`` = PatientID, ``study_id`` =
  StudyInstanceUID and ``id`` = SeriesInstanceUID. ``path`` is the single file of
  a one-file series (a radiograph, a multi-frame file), else the series folder
  when that folder holds this series alone (nothing is copied), else a NIfTI
  written under ``<manifest stem>_volumes/`` (several series share a folder, and
  a path must name one volume).
- ``nifti``: every ``.nii``, ``.nii.gz``, ``.nrrd`` and ``.nhdr`` file, one row each.
- ``medmnist``: PNGs written under ``<manifest stem>_images/<split>/``; see
  ``greenfm.data.medmnist`` for the label columns.

Nothing in the source is ever modified. Unreadable files stop the import with
an error naming them, or are skipped and counted with ``skip_bad=True``. Files
left out on purpose (other extensions, non-image DICOM objects such as
DICOMDIR or reports) are counted as ignored; the one-line summary names the
first of each, e.g. "imported 40 series ...; skipped 3 unreadable file(s)
(first: ...); ignored 2 non-image file(s) (first: ...)".
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from greenfm.data.manifest import load_manifest, write_table
from greenfm.data.readers import probe, sniff_format
from greenfm.errors import BadInputError, ConfigError

KINDS = ("auto", "folders", "dicom", "nifti", "medmnist")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".dicom", ".ima")
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr")
SPLIT_FOLDERS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "test": "test", "testing": "test"}  # fmt: skip
NO_PATIENT_NOTE = "no patient ids in the source; each image is treated as its own patient"
_SHOWN = 3


@dataclass
class ImportSummary:
    """What an import wrote; ``str()`` is a one-line report."""

    kind: str
    source: Path
    manifest: Path
    rows: int
    findings: list[str]
    splits: dict[str, int]
    skipped: list[str] = field(default_factory=list)
    written: Path | None = None  # folder of images / volumes the import created
    label_kind: str | None = None
    ignored: list[str] = field(default_factory=list)  # files left out on purpose (not images)
    own_patient_rows: int = 0  # rows whose image is its own patient (the source has no patient ids)

    def __str__(self) -> str:
        splits = f" ({', '.join(f'{k} {v}' for k, v in self.splits.items())})" if self.splits else ""
        labels = f", {len(self.findings)} finding column(s)" if self.findings else ", no labels"
        unit = "series" if self.kind == "dicom" else "rows"
        skipped = (f"; skipped {len(self.skipped)} unreadable file(s) (first: {self.skipped[0]})"
                   if self.skipped else "")
        ignored = f"; ignored {len(self.ignored)} non-image file(s) (first: {self.ignored[0]})" if self.ignored else ""
        patients = ""
        if self.own_patient_rows:
            patients = (f"; warning: {self.own_patient_rows} of {self.rows} {unit} have no patient id, so each is its own "
                        "patient: splits and CIs cannot keep one person's images together")  # fmt: skip
        return (f"imported {self.rows} {unit}{splits} from {self.source} as {self.kind}{labels} -> "
                f"{self.manifest}{skipped}{ignored}{patients}")


def import_source(
    source: str | Path,
    out_manifest: str | Path,
    *,
    kind: str = "auto",
    label_names: Sequence[str] | None = None,
    pattern: str | None = None,
    skip_bad: bool = False,
    overwrite: bool = False,
) -> ImportSummary:
    """Write a greenfm manifest (CSV, or Parquet by extension) describing ``source``.

    ``kind``: one of ``auto folders dicom nifti medmnist``. ``label_names`` names
    MedMNIST classes (binary: the positive class, or [negative, positive]).
    ``pattern`` (a glob such as ``"**/*.png"``) restricts the files of folder
    kinds. ``overwrite`` allows replacing an existing manifest and images this
    importer wrote before; the source itself is never written.
    """
    source, out = Path(source).expanduser(), Path(out_manifest).expanduser()
    if kind not in KINDS:
        raise ConfigError(f"unknown import kind {kind!r}; choose one of {', '.join(KINDS)}")
    if not source.exists():
        raise BadInputError("source not found", source=str(source))
    if out.resolve() == source.resolve():
        raise BadInputError("the output manifest would overwrite the source", source=str(out))
    if out.exists() and not overwrite:
        raise BadInputError("already exists; pass overwrite=True (--overwrite) to replace it", source=str(out))
    kind = detect_kind(source) if kind == "auto" else kind
    skipped: list[str] = []
    ignored: list[str] = []
    written: Path | None = None
    label_kind = None
    if kind == "medmnist":
        from greenfm.data.medmnist import medmnist_rows

        written = out.parent / f"{_stem(out)}_images"
        table, label_kind, _ = medmnist_rows(source, written, label_names=label_names, overwrite=overwrite)
    elif kind == "folders":
        table = _folder_rows(source, pattern, skip_bad, skipped, ignored)
    elif kind == "dicom":
        written = out.parent / f"{_stem(out)}_volumes"
        table = _dicom_rows(source, written, skip_bad, skipped, overwrite, ignored)
        written = written if written.exists() else None
    else:
        table = _volume_file_rows(source, pattern, skip_bad, skipped, ignored)
    if table.empty:
        raise BadInputError(f"found no readable images for kind {kind!r}", source=str(source))

    out.parent.mkdir(parents=True, exist_ok=True)
    root = out.parent.resolve()
    table["path"] = [_relative(p, root) for p in table["path"]]
    write_table(table, out)
    manifest = load_manifest(out, check_files=False)  # the importer's output must load as-is
    splits = manifest.table["split"].value_counts().reindex(["train", "val", "test"]).dropna().astype(int).to_dict() if manifest.has_splits else {}
    own = 0
    if "meta_patient_note" in table.columns:
        own = int(table["meta_patient_note"].fillna("").astype(str).str.len().gt(0).sum())
    return ImportSummary(kind, source, out, len(manifest), manifest.findings, splits, skipped, written, label_kind, ignored,
                         own_patient_rows=own)  # fmt: skip


def detect_kind(source: Path) -> str:
    """``medmnist`` for an ``.npz``; for a folder, ``dicom`` if it holds DICOM files, else
    ``nifti`` if it holds volumes, else ``folders``."""
    if source.is_file():
        if source.suffix.lower() == ".npz":
            return "medmnist"
        raise BadInputError("cannot import a single file; pass a folder or a MedMNIST .npz", source=str(source))
    from greenfm.data.dicom_series import looks_like_dicom

    files = [p for p in source.rglob("*") if p.is_file() and not p.name.startswith(".")]
    if any(p.suffix.lower() not in (".png", ".jpg", ".jpeg", ".tif", ".tiff") and looks_like_dicom(p) for p in files):
        volumes = [p for p in files if _is_volume_file(p)]
        if volumes:  # importing the series alone would drop these without a word
            raise BadInputError(
                f"holds DICOM files and {len(volumes)} NIfTI volume(s) (e.g. {volumes[0].relative_to(source)}); "
                "choose with --kind dicom or --kind nifti (--pattern narrows the files)", source=str(source),
            )  # fmt: skip
        return "dicom"
    if any(_is_volume_file(p) for p in files):
        return "nifti"
    if any(p.suffix.lower() in IMAGE_EXTENSIONS for p in files):
        return "folders"
    raise BadInputError("cannot tell what the folder holds (no images, DICOM or NIfTI found); pass --kind", source=str(source))


def _folder_rows(source: Path, pattern: str | None, skip_bad: bool, skipped: list[str], ignored: list[str]) -> pd.DataFrame:
    if not source.is_dir():
        raise BadInputError("a folder tree is needed for kind 'folders'", source=str(source))
    from greenfm.data.medmnist import finding_column

    top = _subfolders(source)
    split_layout = bool(top) and all(d.name.lower() in SPLIT_FOLDERS for d in top)
    roots = [(SPLIT_FOLDERS[d.name.lower()], d) for d in top] if split_layout else [(None, source)]
    classes = sorted({d.name for _, root in roots for d in _subfolders(root)}, key=lambda c: (c.lower(), c))
    columns = {name: finding_column(name) for name in classes}
    if len(set(columns.values())) != len(columns):
        raise BadInputError(f"class folder names collide once made column names: {sorted(classes)}", source=str(source))
    rows = []
    for split, root in roots:
        groups = [(d.name, d) for d in _subfolders(root)] or [(None, root)]
        for label, folder in groups:
            for path in _candidate_files(folder, pattern, source, IMAGE_EXTENSIONS, ignored):
                patient = _checked(path, skip_bad, skipped)
                if patient is None:
                    continue
                image_id = path.relative_to(source).as_posix()
                row = {"path": str(path), "patient_id": patient or image_id, "id": image_id}
                if split:
                    row["split"] = split
                row.update({col: int(name == label) for name, col in columns.items()})
                row["meta_patient_note"] = "" if patient else NO_PATIENT_NOTE
                rows.append(row)
    return pd.DataFrame(rows)


def _dicom_rows(
    source: Path, volume_dir: Path, skip_bad: bool, skipped: list[str], overwrite: bool, ignored: list[str]
) -> pd.DataFrame:
    from greenfm.data.dicom_series import find_series, series_volume
    from greenfm.data.volume_files import write_nifti

    if not source.is_dir():
        raise BadInputError("a folder is needed for kind 'dicom'", source=str(source))
    problems: list[BadInputError] | None = [] if skip_bad else None
    left_out: list[Path] = []
    series = find_series(source, problems=problems, ignored=left_out)
    skipped.extend(str(p) for p in problems or [])
    ignored.extend(str(p) for p in left_out)
    owner: dict[Path, set[str]] = {}
    for s in series:
        for f in s.files:
            for parent in [f.parent, *f.parent.parents]:
                owner.setdefault(parent, set()).add(s.uid)
                if parent == source:
                    break
    rows = []
    for s in series:
        if len(s.files) == 1:
            path = s.files[0]
        elif owner.get(s.folder) == {s.uid}:
            path = s.folder
        else:
            path = volume_dir / f"{_safe(s.uid)}.nii.gz"
            if path.exists() and not overwrite:
                raise BadInputError("already exists; pass overwrite=True (--overwrite) to replace it", source=str(path))
            try:
                write_nifti(series_volume(s), path)
            except BadInputError as err:
                if not skip_bad:
                    raise
                skipped.append(str(err))
                continue
        rows.append({
            "path": str(path),
            "patient_id": s.patient_id or s.study_uid or s.uid,
            "study_id": s.study_uid,
            "id": s.uid,
            "meta_modality": s.modality,
            "meta_series_description": s.description,
            "meta_slices": len(s.files),
            "meta_patient_note": "" if s.patient_id else "no PatientID in the DICOM header; the study (else the series) stands for the patient",
        })  # fmt: skip
    return pd.DataFrame(rows)


def _volume_file_rows(source: Path, pattern: str | None, skip_bad: bool, skipped: list[str], ignored: list[str]) -> pd.DataFrame:
    if not source.is_dir():
        raise BadInputError("a folder is needed for kind 'nifti'", source=str(source))
    rows = []
    for path in _candidate_files(source, pattern, source, VOLUME_SUFFIXES, ignored):
        if _checked(path, skip_bad, skipped) is None:
            continue
        image_id = path.relative_to(source).as_posix()
        rows.append({"path": str(path), "patient_id": _strip_suffixes(path.name), "id": image_id,
                     "meta_patient_note": "patient_id is the file name; edit it if files share patients"})  # fmt: skip
    return pd.DataFrame(rows)


def _checked(path: Path, skip_bad: bool, skipped: list[str]) -> str | None:
    """Probe a file; its DICOM PatientID ("" when none); None when bad and skipped."""
    try:
        probe(path)
        if sniff_format(path) == "dicom":
            from greenfm.data.dicom import read_header

            return str(read_header(path).get("PatientID", "") or "")
        return ""
    except BadInputError as err:
        if not skip_bad:
            raise
        skipped.append(str(err))
        return None


def _candidate_files(
    folder: Path, pattern: str | None, source: Path, suffixes: Sequence[str], ignored: list[str]
) -> list[Path]:
    """Files of ``folder`` with one of ``suffixes`` (or a DICOM preamble); the others are added to ``ignored``."""
    from greenfm.data.dicom_series import has_preamble

    files = sorted(p for p in folder.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(source).parts))
    if pattern:
        files = [p for p in files if p.relative_to(source).match(pattern)]
    chosen = [p for p in files if p.name.lower().endswith(tuple(suffixes)) or (".dcm" in suffixes and not p.suffix and has_preamble(p))]
    picked = set(chosen)
    ignored.extend(str(p) for p in files if p not in picked)
    return chosen


def _subfolders(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _is_volume_file(path: Path) -> bool:
    return path.name.lower().endswith(VOLUME_SUFFIXES)


def _relative(path: str, root: Path) -> str:
    """Relative to ``root`` (already resolved) when inside it, else absolute; no per-row symlink walk."""
    absolute = Path(os.path.abspath(path))
    try:
        return absolute.relative_to(root).as_posix()
    except ValueError:
        return str(absolute)


def _stem(path: Path) -> str:
    return _strip_suffixes(path.name)


def _strip_suffixes(name: str) -> str:
    for suffix in (".nii.gz", ".csv", ".parquet", ".pq", ".nii", ".nrrd", ".nhdr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _safe(uid: str) -> str:
    return re.sub(r"[^0-9A-Za-z._-]+", "_", uid)
