"""Multi-sequence MRI studies (METHODS 3.6, "MRI"): the study manifest and ``MRIStudyDataset``.

The study manifest
------------------
One row per study. Besides the columns of every greenfm manifest (``patient_id``
required; ``id``, ``study_id``, ``split``, ``report``, ``meta_*`` optional; every other
column a finding with values 1 / 0 / -1 / empty), it names up to nine volumes in
columns ``path_<plane>_<sequence>``::

    plane    sag (sagittal), cor (coronal), tra (transverse / axial)
    sequence pd, t1, t2

    patient_id,split,path_sag_pd,path_sag_t2,path_cor_pd,path_tra_t2,meniscus_medial,...
    P001,train,P001/S3,P001/S4,P001/S5,P001/S7.nii.gz,1,...

Each cell is a NIfTI or NRRD file, a DICOM series folder or a multi-frame DICOM file, relative
to the study folder ``path`` when the row has one (then itself relative to the manifest),
else to the manifest's folder. A manifest is an MRI-study manifest when it has at least one
``path_*`` column (:func:`is_study_manifest`); a ``path_*`` column outside the nine is an error
naming the valid ones.

Why columns and not a folder naming rule: a hospital export names its series freely ("SAG PD
FS", "t2_tse_tra_384", series numbers) and nests them in many ways, so the link from a series
to (plane, sequence) is a per-site decision that a spreadsheet column records once, next to
the labels and splits, with no renaming or copying of images.

Missing data. An empty cell is a missing sequence: its channel is zeros (the official
behaviour). A plane with no sequence at all is a zero plane (spine protocols often lack
a coronal plane); the encoder still averages the three plane features, as the official
code does. A study with no sequence at all, a cell naming a file that is missing or
unreadable (header probe), or an invalid label is a problem row: one ``BadInputError`` line
naming the row and column, or with ``skip_bad`` dropped and counted in ``manifest.problems``.
After loading, ``table["path"]`` holds the study folder, else the first listed volume (a
unique key per study for the rest of greenfm), ``id`` defaults to ``study_id``, else that key,
and the ``path_*`` cells are absolute (None where missing).

Labels. The knee (14) and spine (9) vocabularies end with a normal-study finding,
``knee_nor`` / ``spine_nor`` (``NOR``): it is derived, not read, whenever all the other
findings of its vocabulary are columns of the manifest: 1 when all of them are 0, 0 when
any is 1, else empty when some are unknown (a NOR given in the manifest is then kept), else
-1 (some uncertain). A given NOR that disagrees with the derived value is replaced, and
counted in a warning. A manifest mixing knee and spine studies holds both column sets with
the other anatomy's cells empty: those are masked in the BCE (the official code pads labels
and masks the padding).

The dataset
-----------
Per volume: 1st-99th percentile clip and z-score, pad or centre-crop to (D, H, W) =
(24, 240, 240) (METHODS' (240, 240, 24) as (H, W, D)), then one crop of (20, 192, 192) per
plane, random in training and centred in evaluation, shared by the plane's sequences. The
slice axis of each file stays its depth D (no reorientation: a sagittal series keeps its
sagittal slices, which the encoder's (1, 2, 2) stem expects). Items are ``{"image": float32
(3 planes, 3 sequences, D, H, W), "labels": float32 (K,), "index": int}``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from greenfm.data.manifest import (
    LABEL_VALUES,
    META_PREFIX,
    OPTIONAL_COLUMNS,
    SPLITS,
    Manifest,
    Problem,
    _summarise,
    read_table,
)
from greenfm.errors import BadInputError, ConfigError

log = logging.getLogger(__name__)

PLANES = ("sag", "cor", "tra")
SEQUENCES = ("pd", "t1", "t2")
PATH_COLUMNS = tuple(f"path_{p}_{s}" for p in PLANES for s in SEQUENCES)
PAD_SIZE = (24, 240, 240)  # (D, H, W)
CROP_SIZE = (20, 192, 192)

# The knee and spine vocabularies (labeling/vocabularies/mri-knee-14.yaml, mri-spine-9.yaml), in order;
# the last of each is its normal-study finding (NOR).
KNEE_14 = ("meniscus_medial", "meniscus_lateral", "acl", "pcl", "mcl", "lcl", "cartilage", "bone_edema", "bone_fracture",
           "effusion_baker_cyst", "synovitis_bursitis", "postoperative", "osteoarthritis", "knee_nor")  # fmt: skip
SPINE_9 = ("disc_degeneration", "disc_bulge", "disc_herniation", "spondylolisthesis", "stenosis", "endplate_change",
           "vertebral_fracture", "spine_postoperative", "spine_nor")  # fmt: skip
NOR_OF = {KNEE_14[-1]: KNEE_14[:-1], SPINE_9[-1]: SPINE_9[:-1]}
VOCABULARIES = {"mri-knee-14": KNEE_14, "mri-spine-9": SPINE_9}

_PATH_COLUMN = re.compile(r"^path_")


def is_study_manifest(source: str | Path | pd.DataFrame | Sequence[str]) -> bool:
    """True when a manifest (a file, a table or its column names) is an MRI-study manifest: any ``path_*`` column."""
    if isinstance(source, (str, Path)):
        source = read_table(Path(source))
    columns = source.columns if isinstance(source, pd.DataFrame) else source
    return any(_PATH_COLUMN.match(str(c)) for c in columns)


class StudyManifest(Manifest):
    """A validated MRI-study manifest: a ``Manifest`` whose rows are studies with ``path_*`` cells."""

    def subset(self, mask) -> "StudyManifest":
        table = self.table.loc[np.asarray(mask)].reset_index(drop=True)
        return StudyManifest(table, list(self.findings), self.source, [])

    @property
    def path_columns(self) -> list[str]:
        return [c for c in PATH_COLUMNS if c in self.table.columns]

    def save(self, path: str | Path) -> Path:
        raise ConfigError("saving an MRI-study manifest is not supported; edit the original table")


def load_study_manifest(
    path: str | Path, *, skip_bad: bool = False, check_files: bool = True, derive_nor: bool = True
) -> StudyManifest:
    """Read and validate an MRI-study manifest (module docstring); ``skip_bad`` drops and counts bad rows."""
    source = Path(path)
    table = read_table(source).copy()
    where = str(source)
    if "patient_id" not in table.columns:
        raise BadInputError("missing required column patient_id", source=where)
    stray = [c for c in table.columns if _PATH_COLUMN.match(str(c)) and c not in PATH_COLUMNS]
    if stray:
        raise BadInputError(f"unknown column(s) {stray}: sequence columns are path_<plane>_<sequence> with plane in "
                            f"{PLANES} and sequence in {SEQUENCES}", source=where)  # fmt: skip
    columns = [c for c in PATH_COLUMNS if c in table.columns]
    if not columns:
        raise BadInputError(f"no sequence column; an MRI-study manifest names its volumes in {PATH_COLUMNS[:2]}...",
                            source=where)  # fmt: skip
    reserved = set(OPTIONAL_COLUMNS) | {"path", "patient_id"}
    findings = [c for c in table.columns if c not in reserved and not str(c).startswith((META_PREFIX, "path_"))]

    problems: list[Problem] = []
    bad = np.zeros(len(table), dtype=bool)
    key = [""] * len(table)

    def flag(i: int, reason: str) -> None:
        bad[i] = True
        problems.append(Problem(i + 1, key[i], reason))

    root = source.parent.resolve()
    study_dirs = [_cell(v) for v in table["path"]] if "path" in table.columns else [None] * len(table)
    resolved = {c: [None] * len(table) for c in columns}
    for i in range(len(table)):
        base = Path(study_dirs[i]).expanduser() if study_dirs[i] else None
        base = (base if base.is_absolute() else root / base) if base is not None else root
        for c in columns:
            cell = _cell(table[c].iat[i])
            if cell:
                p = Path(cell).expanduser()
                resolved[c][i] = str(p if p.is_absolute() else (base / p).resolve(strict=False))
        listed = [resolved[c][i] for c in columns if resolved[c][i]]
        key[i] = str(base) if study_dirs[i] else (listed[0] if listed else "")
        pid = table["patient_id"].iat[i]
        if pd.isna(pid) or not str(pid).strip():
            flag(i, "missing patient_id")
        if not listed:
            flag(i, f"no sequence file in any of {columns}")
        elif check_files:
            for c in columns:
                if resolved[c][i]:
                    reason = _probe_problem(resolved[c][i])
                    if reason:
                        flag(i, f"{c}: {reason}")
                        break
    for col in findings:
        values = pd.to_numeric(table[col], errors="coerce")
        given = table[col].notna() & (table[col].astype("string").str.strip() != "")
        invalid = (given & values.isna()) | (values.notna() & ~values.isin(LABEL_VALUES))
        for i in np.flatnonzero(invalid.to_numpy()):
            flag(int(i), f"label {col}='{table[col].iat[int(i)]}' is not 1, 0, -1 or empty")
        table[col] = values.astype("float32")
    if "split" in table.columns:
        split = table["split"].astype("string").str.strip().str.lower()
        for i in np.flatnonzero((split.notna() & ~split.isin(SPLITS)).to_numpy()):
            flag(int(i), f"split '{table['split'].iat[int(i)]}' is not train, val or test")
        table["split"] = split
        counts = table.loc[~bad & split.notna().to_numpy()].groupby("patient_id")["split"].nunique()
        for i in np.flatnonzero((table["patient_id"].isin(set(counts.index[counts > 1])) & ~bad).to_numpy()):
            flag(int(i), f"patient '{table['patient_id'].iat[int(i)]}' appears in several splits")

    for c in columns:
        table[c] = resolved[c]
    table["path"] = key
    table["patient_id"] = table["patient_id"].astype("string")
    ids = table["id"].astype("string") if "id" in table.columns else pd.Series([pd.NA] * len(table), dtype="string")
    if "study_id" in table.columns:
        ids = ids.fillna(table["study_id"].astype("string"))
    table["id"] = ids.fillna(pd.Series(key, dtype="string"))
    for i in np.flatnonzero(table["id"].duplicated(keep="first").to_numpy()):
        flag(int(i), f"duplicate study id '{table['id'].iat[int(i)]}'")

    problems.sort(key=lambda p: p.row)
    if problems and not skip_bad:
        raise BadInputError(_summarise(problems, len(table)) + " (use --skip-bad to skip them)", source=where)
    table = table.loc[~bad].reset_index(drop=True)
    if table.empty:
        raise BadInputError(f"no usable study (first: {problems[0]})" if problems else "the manifest is empty",
                            source=where)  # fmt: skip
    if derive_nor:
        table = derive_normal_findings(table, source=where)
        findings += [nor for nor in NOR_OF if nor in table.columns and nor not in findings]
    return StudyManifest(table, findings, source, problems)


def derive_normal_findings(table: pd.DataFrame, *, source: str | None = None) -> pd.DataFrame:
    """Set each NOR column (``knee_nor``, ``spine_nor``) from its vocabulary's other findings.

    1 when all are 0, 0 when any is 1, else NaN when some are unknown (a given NOR is then kept),
    else -1 (some uncertain); done only where all those findings are columns of ``table``.
    """
    table = table.copy()
    for nor, others in NOR_OF.items():
        if not all(c in table.columns for c in others):
            continue
        y = table[list(others)].to_numpy(dtype=np.float32)
        derived = np.where((y == 1).any(1), 0.0, np.where(np.isnan(y).any(1), np.nan,
                           np.where((y == -1).any(1), -1.0, 1.0))).astype(np.float32)  # fmt: skip
        if nor in table.columns:
            given = table[nor].to_numpy(dtype=np.float32)
            differ = int((~np.isnan(given) & ~np.isnan(derived) & (given != derived)).sum())
            if differ:
                log.warning("%s: %s given in %d row(s) disagrees with the other findings; derived instead",
                            source or "manifest", nor, differ)  # fmt: skip
            derived = np.where(np.isnan(derived), given, derived)
        table[nor] = derived
    return table


def _cell(value: Any) -> str | None:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    text = str(value).strip()
    return text or None


def _probe_problem(path: str) -> str | None:
    from greenfm.data.readers import probe  # readers pull in optional codecs

    try:
        probe(path)
    except BadInputError as err:
        return str(err).removeprefix(f"{path}: ")
    except OSError as err:
        return f"unreadable ({err.strerror or err})"
    return None


# -- the dataset ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyTransform:
    """One volume (D, H, W) -> normalised, padded (1, D, H, W); then a crop per plane."""

    pad_size: tuple[int, int, int] = PAD_SIZE
    crop_size: tuple[int, int, int] = CROP_SIZE

    def volume(self, array: np.ndarray) -> torch.Tensor:
        from greenfm.data.volumes import pad_or_crop, percentile_zscore

        x = torch.as_tensor(np.ascontiguousarray(array, dtype=np.float32))[None]
        return pad_or_crop(percentile_zscore(x), self.pad_size, value=0.0)

    def crop(self, plane: torch.Tensor, *, train: bool) -> torch.Tensor:
        from greenfm.data.volumes import center_crop, random_crop

        if not train:
            return center_crop(plane, self.crop_size)
        # Seeded from torch's generator, which the DataLoader seeds per worker and per run.
        return random_crop(plane, self.crop_size, seed=int(torch.randint(0, 2**31 - 1, ()).item()))


class MRIStudyDataset(Dataset):
    """Studies of an MRI-study manifest as (planes, sequences, D, H, W) tensors with labels.

    ``labels=False`` leaves ``"labels"`` out; labels keep NaN (unknown) and -1 (uncertain)
    for the label policy and its masked BCE. ``findings`` picks and orders label columns
    (default: every finding column; ``"mri-knee-14"`` / ``"mri-spine-9"`` name a vocabulary). A file that passed the header probe but cannot be decoded
    raises one line naming the row, the column and the file.
    """

    def __init__(
        self,
        manifest: StudyManifest | str | Path,
        *,
        train: bool = False,
        labels: bool = True,
        findings: Sequence[str] | str | None = None,
        pad_size: tuple[int, int, int] = PAD_SIZE,
        crop_size: tuple[int, int, int] = CROP_SIZE,
        skip_bad: bool = False,
    ):
        manifest = _study_manifest(manifest, skip_bad)
        if len(pad_size) != 3 or len(crop_size) != 3 or min(*pad_size, *crop_size) < 1:
            raise ConfigError(f"pad {tuple(pad_size)} and crop {tuple(crop_size)} must be three positive (D, H, W) sizes")
        if any(c > p for c, p in zip(crop_size, pad_size)):
            raise ConfigError(f"crop {tuple(crop_size)} is larger than the padded size {tuple(pad_size)}")
        self.manifest = manifest
        self.train = train
        self.transform = StudyTransform(tuple(pad_size), tuple(crop_size))
        if isinstance(findings, str):
            if findings not in VOCABULARIES:
                raise ConfigError(f"findings '{findings}': give a list of columns or one of {sorted(VOCABULARIES)}")
            findings = VOCABULARIES[findings]
        self.findings = list(findings) if findings is not None else list(manifest.findings)
        missing = [f for f in self.findings if f not in manifest.table.columns]
        if missing:
            raise ConfigError(f"finding(s) {missing} are not columns of {manifest.source}")
        self._labels = np.array(manifest.labels(self.findings)) if labels else None
        self._paths = manifest.table[[c for c in PATH_COLUMNS if c in manifest.table.columns]]

    @property
    def problems(self) -> list[Problem]:
        """Rows skipped when the manifest was loaded (``skip_bad``)."""
        return self.manifest.problems

    def __len__(self) -> int:
        return len(self.manifest)

    def read(self, index: int, column: str) -> np.ndarray | None:
        """The raw (D, H, W) array of one cell, None when the sequence is missing."""
        path = self._paths[column].iat[index] if column in self._paths.columns else None
        if path is None or (not isinstance(path, str) and pd.isna(path)):
            return None
        from greenfm.data.readers import read_volume

        try:
            volume = read_volume(path)
        except BadInputError as err:
            row = self.manifest.table["id"].iat[index]
            raise BadInputError(f"study '{row}' {column}: {str(err).removeprefix(f'{path}: ')}", source=path) from None
        return volume.array

    def image(self, index: int) -> torch.Tensor:
        """(planes, sequences, D, H, W) float32; missing sequences and planes are zeros."""
        t = self.transform
        planes = []
        for plane in PLANES:
            channels = []
            for seq in SEQUENCES:
                array = self.read(index, f"path_{plane}_{seq}")
                channels.append(torch.zeros((1, *t.pad_size)) if array is None else t.volume(array))
            planes.append(t.crop(torch.cat(channels), train=self.train))
        return torch.stack(planes)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item: dict[str, Any] = {"image": self.image(index), "index": int(index)}
        if self._labels is not None:
            item["labels"] = torch.from_numpy(self._labels[index])
        return item


def mri_study_dataset(
    manifest: StudyManifest | str | Path,
    *,
    train: bool,
    skip_bad: bool = False,
    labels: bool = True,
    findings: Sequence[str] | str | None = None,
    crop: tuple[int, int, int] | None = None,
    pad: tuple[int, int, int] | None = None,
) -> MRIStudyDataset:
    """The dataset a workflow builds for an MRI-study manifest (``is_study_manifest``).

    ``crop`` / ``pad`` are (D, H, W), default (20, 192, 192) / (24, 240, 240).
    """
    manifest = _study_manifest(manifest, skip_bad)
    if manifest.problems:
        log.warning("%s: skipped %d bad stud(ies); first: %s", manifest.source, len(manifest.problems),
                    manifest.problems[0])  # fmt: skip
    return MRIStudyDataset(manifest, train=train, labels=labels, findings=findings,
                           pad_size=tuple(pad or PAD_SIZE), crop_size=tuple(crop or CROP_SIZE))  # fmt: skip


def _study_manifest(manifest: StudyManifest | Manifest | str | Path, skip_bad: bool) -> StudyManifest:
    if isinstance(manifest, StudyManifest):
        return manifest
    if isinstance(manifest, Manifest):
        raise ConfigError(f"{manifest.source}: one image per row, not an MRI-study manifest (path_<plane>_<sequence> "
                          "columns); load it with load_study_manifest")  # fmt: skip
    return load_study_manifest(manifest, skip_bad=skip_bad)


def positive_oversampling_weights(labels: np.ndarray, ratio: float = 0.15, max_factor: float = 100.0) -> np.ndarray:
    """Per-study weights for ``torch.utils.data.WeightedRandomSampler`` that raise rare positives.

    A finding with ``pos`` positive and ``neg`` negative studies gets the factor
    ``clip(ratio * neg / pos, 1, max_factor)``; a study weighs the largest factor among its
    positive findings (1 with none), so a rare finding is drawn about ``ratio`` as often as
    its negatives (METHODS 3.6, "optional positive oversampling"; the official code repeats
    positive samples greedily instead). Unknown and uncertain labels count as neither.
    """
    if ratio <= 0 or max_factor < 1:
        raise ConfigError(f"oversampling needs ratio > 0 and max_factor >= 1, got {ratio}, {max_factor}")
    y = np.asarray(labels, dtype=np.float64)
    if y.ndim != 2:
        raise ConfigError(f"labels must be (N, K), got shape {y.shape}")
    positive, negative = (y == 1), (y == 0)
    pos, neg = positive.sum(0), negative.sum(0)
    factor = np.where(pos > 0, np.clip(ratio * neg / np.maximum(pos, 1), 1.0, max_factor), 1.0)
    return np.where(positive, factor[None, :], 1.0).max(axis=1, initial=1.0)
