"""Patient-level splits and nested label fractions.

Every split is by ``patient_id``: all images of a patient land in one split
(``assert_no_patient_leakage`` checks it and is re-exported here for every
consumer). Splits are stratified by the finding pattern where the data allow.
Label fractions (1% / 10% / 100%) are nested prefixes of one seeded,
stratified ordering of patients, so 1% is inside 10% is inside 100%.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from greenfm.data.manifest import Manifest, assert_no_patient_leakage, finding_columns, load_manifest
from greenfm.errors import BadInputError, ConfigError

__all__ = [
    "FractionPlan",
    "assert_no_patient_leakage",
    "nested_label_fractions",
    "patient_grouped_split",
    "split_manifest",
]


def patient_grouped_split(
    table: pd.DataFrame | Manifest,
    *,
    val: float = 0.1,
    test: float = 0.2,
    seed: int = 0,
    stratify: bool = True,
    findings: Sequence[str] | None = None,
) -> pd.DataFrame:
    """A copy of ``table`` with a ``split`` column (train / val / test), patient-disjoint.

    ``val`` and ``test`` are fractions of images, met to within one patient.
    Patients are put in one seeded order, stratified by their finding pattern
    (rare patterns fall back to their rarest finding), and the order is cut at
    the target image counts: proportional allocation per stratum. Written by
    hand because scikit-learn's ``StratifiedGroupKFold`` loops in Python over
    patients (about two minutes for 30k patients on two cores) and only yields
    fractions of the form 1/K.
    """
    table, findings = _table_and_findings(table, findings)
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ConfigError(f"val={val} and test={test} must be fractions in [0, 1) summing to less than 1")
    patients, patient_of_row, images, pos = _per_patient(table, findings)
    needed = 1 + (val > 0) + (test > 0)
    if len(patients) < needed:
        raise BadInputError(f"{len(patients)} patient(s) cannot fill {needed} patient-disjoint splits")

    rng = np.random.default_rng(seed)
    smallest = min(f for f in (val, test, 1 - val - test) if f > 0)
    if stratify and findings:
        strata = _strata(pos > 0, min_count=int(np.ceil(1 / smallest)))
    else:
        strata = np.zeros(len(patients), dtype=int)
    order = _stratified_order(strata, rng)
    # A patient belongs to the segment holding the middle of its images.
    middle = (np.cumsum(images[order]) - images[order] / 2) / images.sum()
    name = np.where(middle < test, "test", np.where(middle < test + val, "val", "train")).astype(object)
    for wanted in [s for s, f in (("train", 1.0), ("test", test), ("val", val)) if f > 0]:
        if not (name == wanted).any():  # tiny cohorts: one patient at least, from the largest split
            donor = max(("train", "val", "test"), key=lambda s: int((name == s).sum()))
            name[np.flatnonzero(name == donor)[-1]] = wanted
    split_of_patient = np.empty(len(patients), dtype=object)
    split_of_patient[order] = name
    out = table.copy()
    out["split"] = split_of_patient[patient_of_row]
    assert_no_patient_leakage(out)
    return out


@dataclass
class FractionPlan:
    """Nested, patient-grouped subsets of a training table, one per label fraction.

    ``rows[f]`` are positions in the table the plan was drawn from (sorted);
    ``counts`` has per fraction the target and actual image and patient counts
    and the positives per finding; ``missing_positives[f]`` lists the findings
    with no positive image at fraction ``f``.
    """

    seed: int
    fractions: tuple[float, ...]
    findings: list[str]
    rows: dict[float, np.ndarray]
    counts: list[dict[str, Any]]
    missing_positives: dict[float, list[str]] = field(default_factory=dict)
    ids: dict[float, list[str]] | None = None

    def subset(self, table: pd.DataFrame | Manifest, fraction: float) -> pd.DataFrame | Manifest:
        """The rows of ``table`` (the one the plan was drawn from) at ``fraction``."""
        rows = self.rows[float(fraction)]
        if isinstance(table, Manifest):
            mask = np.zeros(len(table), dtype=bool)
            mask[rows] = True
            return table.subset(mask)
        return table.iloc[rows]

    def counts_table(self) -> pd.DataFrame:
        return pd.DataFrame(self.counts)

    def summary(self) -> str:
        lines = [f"label fractions, seed {self.seed}:"]
        for c in self.counts:
            f = c["fraction"]
            share = f"{c['actual_fraction']:.2%}"
            same = f"; the same subset as {c['same_subset_as']:g}" if "same_subset_as" in c else ""
            lines.append(f"  {f:g}: {c['n_patients']} patients ({c.get('patient_fraction', f):.2%}), "
                         f"{c['n_images']} images ({share}){same}")
            if self.missing_positives.get(f):
                lines.append(f"    no positives for: {', '.join(self.missing_positives[f])}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["rows"] = {str(f): r.tolist() for f, r in self.rows.items()}
        data["missing_positives"] = {str(f): m for f, m in self.missing_positives.items()}
        data["ids"] = {str(f): i for f, i in self.ids.items()} if self.ids else None
        return data

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path


def nested_label_fractions(
    train_table: pd.DataFrame | Manifest,
    fractions: Sequence[float] = (0.01, 0.1, 1.0),
    *,
    seed: int,
    stratify: bool = True,
    findings: Sequence[str] | None = None,
    min_positives: int = 1,
) -> FractionPlan:
    """Draw nested label fractions: each fraction is that share of the training patients.

    Patients are put in one seeded order, stratified by their finding pattern
    (systematic sampling within strata, so every prefix is stratified), and each
    fraction ``f`` is the first ``round(f x patients)`` of them (at least one; ``1.0``
    all). Rare findings: the order begins with one patient holding ``min_positives``
    positive image(s) of each finding, rarest finding first (a patient covering several
    counts once), so the smallest subsets hold as many findings as their size allows; a
    subset still without a positive of a finding warns and lists it in
    ``missing_positives`` (training skips and counts that finding in that cell). The
    order depends only on the table, ``seed`` and ``findings``, never on the other
    fractions asked for: ``finetune --label-fraction 0.1`` and a study's 10% are the same
    patients. Two fractions that round to the same patients are flagged
    (``same_subset_as`` in their counts, and a warning).
    """
    table, findings = _table_and_findings(train_table, findings)
    fracs = tuple(sorted(float(f) for f in fractions))
    if not fracs or any(not 0 < f <= 1 for f in fracs):
        raise ConfigError(f"fractions must lie in (0, 1], got {tuple(fractions)}")
    if table.empty:
        raise BadInputError("the training table is empty")

    patients, patient_of_row, images, pos = _per_patient(table, findings)
    pos_rows = _positives(table, findings).astype(np.int64)  # (N, K)

    rng = np.random.default_rng(seed)
    strata = _strata(pos > 0, min_count=2) if stratify and findings else np.zeros(len(patients), dtype=int)
    order = list(_stratified_order(strata, rng))
    if min_positives > 0 and findings:
        order = _positives_first(order, pos, min_positives)
    total, n_patients = int(images.sum()), len(order)
    rows: dict[float, np.ndarray] = {}
    counts: list[dict[str, Any]] = []
    missing: dict[float, list[str]] = {}
    previous: tuple[float, int] | None = None
    for f in fracs:
        length = n_patients if f >= 1 else min(n_patients, max(1, int(f * n_patients + 0.5)))
        chosen = np.asarray(order[:length])
        member = np.isin(patient_of_row, chosen)
        rows[f] = np.flatnonzero(member)
        got = pos_rows[member].sum(axis=0)
        missing[f] = [name for name, n in zip(findings, got) if n == 0]
        counts.append({
            "fraction": f,
            "target_patients": round(f * n_patients, 2),
            "n_images": int(member.sum()),
            "n_patients": int(length),
            "actual_fraction": float(member.sum() / total),
            "patient_fraction": float(length / n_patients),
            **{f"positives_{name}": int(n) for name, n in zip(findings, got)},
        })
        if previous is not None and previous[1] == length:
            counts[-1]["same_subset_as"] = previous[0]
            warnings.warn(f"label fractions {previous[0]:g} and {f:g} (seed {seed}) are the same {length} of "
                          f"{n_patients} training patients", stacklevel=2)  # fmt: skip
        previous = (f, length)
        if missing[f]:
            warnings.warn(f"label fraction {f:g} (seed {seed}) has no positive images for: {', '.join(missing[f])}",
                          stacklevel=2)
    ids = {f: table["id"].astype(str).to_numpy()[r].tolist() for f, r in rows.items()} if "id" in table else None
    return FractionPlan(seed, fracs, list(findings), rows, counts, missing, ids)


def split_manifest(
    data: str | Path | Manifest,
    out: str | Path,
    *,
    val: float = 0.1,
    test: float = 0.2,
    seed: int = 0,
    stratify: bool = True,
    keep_test: bool = False,
) -> Manifest:
    """Split a manifest by patient and write it to ``out``; never overwrites the input.

    ``keep_test``: the input's ``test`` rows stay the test split and only the other rows are
    split, into train and ``val`` (a share of those rows' images); ``test`` is then unused.
    """
    manifest = data if isinstance(data, Manifest) else load_manifest(data, check_files=False)
    out = Path(out)
    if manifest.source is not None and out.resolve() == Path(manifest.source).resolve():
        raise ConfigError(f"{out}: refusing to overwrite the input manifest; choose another --out")
    if keep_test:
        if not manifest.has_splits or not (manifest.table["split"] == "test").any():
            raise ConfigError("--keep-test needs a manifest whose 'split' column already holds test rows")
        given = manifest.table["split"]
        is_test = (given == "test").fillna(False).to_numpy(dtype=bool)
        rest = patient_grouped_split(manifest.table.loc[~is_test].drop(columns=["split"]), val=val, test=0.0,
                                     seed=seed, stratify=stratify, findings=manifest.findings)  # fmt: skip
        table = manifest.table.copy()
        table.loc[~is_test, "split"] = rest["split"].to_numpy()
    else:
        table = patient_grouped_split(manifest, val=val, test=test, seed=seed, stratify=stratify)
    result = Manifest(table, list(manifest.findings), out, [])
    result.save(out)
    return result


# -- helpers -------------------------------------------------------------------


def _table_and_findings(
    table: pd.DataFrame | Manifest, findings: Sequence[str] | None
) -> tuple[pd.DataFrame, list[str]]:
    if isinstance(table, Manifest):
        findings = findings if findings is not None else table.findings
        table = table.table
    if "patient_id" not in table.columns:
        raise BadInputError("the table has no 'patient_id' column; every split is patient-level")
    if table["patient_id"].isna().any():
        raise BadInputError(f"{int(table['patient_id'].isna().sum())} row(s) have no patient_id")
    findings = list(findings) if findings is not None else finding_columns(table)
    unknown = [f for f in findings if f not in table.columns]
    if unknown:
        raise ConfigError(f"unknown finding column(s) {', '.join(unknown)}")
    return table.reset_index(drop=True), findings


def _per_patient(table: pd.DataFrame, findings: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Patients, the patient of each row, images per patient, positive images per patient and finding."""
    patients, patient_of_row = np.unique(table["patient_id"].astype(str).to_numpy(), return_inverse=True)
    patient_of_row = patient_of_row.reshape(-1)
    images = np.bincount(patient_of_row, minlength=len(patients))
    pos = np.zeros((len(patients), len(findings)), dtype=np.int64)
    np.add.at(pos, patient_of_row, _positives(table, findings).astype(np.int64))
    return patients, patient_of_row, images, pos


def _positives(table: pd.DataFrame, findings: Sequence[str]) -> np.ndarray:
    """(N, K) bool: label == 1 (uncertain -1 and unknown NaN are not positive)."""
    if not findings:
        return np.zeros((len(table), 0), dtype=bool)
    return pd.DataFrame({f: pd.to_numeric(table[f], errors="coerce") for f in findings}).to_numpy() == 1


def _strata(positive: np.ndarray, *, min_count: int) -> np.ndarray:
    """Integer stratum per row: its finding pattern, or (when rare) its rarest finding, or 'rare'.

    Full multi-label stratification is combinatorial; keying rare rows on their
    rarest finding is the usual cheap approximation.
    """
    n, k = positive.shape
    if k == 0:
        return np.zeros(n, dtype=int)
    patterns, pattern_id, pattern_n = np.unique(positive, axis=0, return_inverse=True, return_counts=True)
    pattern_id = pattern_id.reshape(-1)
    per_finding = positive.sum(axis=0)
    stratum = pattern_id.astype(np.int64)
    rare = pattern_n[pattern_id] < min_count
    if rare.any():
        rarity = np.where(positive, per_finding[None, :], np.iinfo(np.int64).max)
        rarest = rarity.argmin(axis=1)
        usable = rare & positive.any(axis=1) & (per_finding[rarest] >= min_count)
        stratum[usable] = len(patterns) + rarest[usable]
        stratum[rare & ~usable] = len(patterns) + k
    return np.unique(stratum, return_inverse=True)[1].reshape(-1)


def _stratified_order(strata: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random order of items whose every prefix holds each stratum in proportion.

    Within each stratum the members are shuffled and spread evenly over [0, 1)
    with a random offset; sorting all by that position interleaves the strata.
    """
    position = np.empty(len(strata))
    for s in np.unique(strata):
        members = rng.permutation(np.flatnonzero(strata == s))
        position[members] = (np.arange(len(members)) + rng.uniform()) / len(members)
    tiebreak = rng.random(len(strata))
    return np.lexsort((tiebreak, position))


def _positives_first(order: list[int], pos: np.ndarray, min_positives: int) -> list[int]:
    """The order with, first, one patient per finding (rarest first) holding ``min_positives`` positives."""
    carriers = (pos >= min_positives).sum(axis=0)
    front: list[int] = []
    covered = np.zeros(pos.shape[1], dtype=bool)
    for k in np.argsort(carriers, kind="stable"):
        if covered[k] or carriers[k] == 0:
            continue
        patient = next(p for p in order if pos[p, k] >= min_positives)
        front.append(patient)
        covered |= pos[patient] >= min_positives
    chosen = set(front)
    return front + [p for p in order if p not in chosen]
