"""The manifest: greenfm's one input format.

A CSV or Parquet table with one row per image (or volume):

- ``path`` (required): relative to the manifest file, or absolute;
- ``patient_id`` (required): every split is patient-level;
- ``id``, ``study_id``, ``split``, ``report`` (optional);
- ``meta_*`` columns: carried along, never used as labels;
- every other column is a finding, with values 1 / 0 / -1 / empty
  (present / absent / uncertain / unknown).

Loading validates everything up front. By default any problem stops the load
with one line that counts the problems and names the first offending rows; with
``skip_bad=True`` bad rows are dropped and counted in ``Manifest.problems``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from greenfm.errors import BadInputError
from greenfm.io_safety import atomic_output

REQUIRED_COLUMNS = ("path", "patient_id")
OPTIONAL_COLUMNS = ("id", "study_id", "split", "report")
META_PREFIX = "meta_"
LABEL_VALUES = (1.0, 0.0, -1.0)
SPLITS = ("train", "val", "test")
_SHOWN_PROBLEMS = 3


@dataclass(frozen=True)
class Problem:
    """One bad row: its 1-based data-row number in the file, its path and why.

    Shown as the row a spreadsheet gives it, the header being row 1 (data row 1 is "row 2").
    """

    row: int
    path: str
    reason: str

    def __str__(self) -> str:
        where = f"row {self.row + 1}" + (f" ({self.path})" if self.path else "")
        return f"{where}: {self.reason}"


@dataclass
class Manifest:
    """A validated manifest.

    ``table`` has absolute ``path``, string ``id`` and ``patient_id``, and the
    finding columns as float (NaN unknown, -1 uncertain, 0 absent, 1 present).
    """

    table: pd.DataFrame
    findings: list[str]
    source: Path | None = None
    problems: list[Problem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.table)

    @property
    def hash(self) -> str:
        """A content hash of the rows (paths as written, ids, labels, splits, reports)."""
        return table_hash(self.table)

    @property
    def has_splits(self) -> bool:
        return "split" in self.table.columns and self.table["split"].notna().any()

    def labels(self, findings: Iterable[str] | None = None) -> np.ndarray:
        """(N, K) float32 array of the finding columns, NaN where unknown."""
        cols = list(findings) if findings is not None else self.findings
        if not cols:
            return np.zeros((len(self.table), 0), dtype=np.float32)
        return self.table[cols].to_numpy(dtype=np.float32)

    def split(self, name: str) -> "Manifest":
        """The rows of one split (``train``, ``val`` or ``test``)."""
        if not self.has_splits:
            raise BadInputError(
                "the manifest has no 'split' column; run `greenfm data split` first",
                source=str(self.source) if self.source else None,
            )
        return self.subset(self.table["split"] == name)

    def subset(self, mask) -> "Manifest":
        table = self.table.loc[np.asarray(mask)].reset_index(drop=True)
        return Manifest(table, list(self.findings), self.source, [])

    def save(self, path: str | Path) -> Path:
        """Write the manifest with paths relative to its new location where possible."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        out = self.table.copy()
        out["path"] = [_relative_to(p, path.parent) for p in out["path"]]
        write_table(out, path)
        return path


SKIP_HINT = "use --skip-bad to skip them"
NO_SKIP_HINT = "fix or remove those rows; this verb has no --skip-bad"


def load_manifest(
    path: str | Path,
    *,
    skip_bad: bool = False,
    check_files: bool = True,
    file_check: Callable[[Path], None] | None = None,
    skip_hint: str = SKIP_HINT,
) -> Manifest:
    """Read and validate a manifest; see the module docstring for the format.

    ``skip_hint`` ends the error about bad rows: what the calling verb lets the user do
    (the default names ``--skip-bad``; a verb without that option passes its own).

    ``file_check(path)`` may raise ``BadInputError`` for an unreadable file; by
    default the readers' cheap header probe is used when ``check_files`` is set.
    """
    source = Path(path)
    table = read_table(source)
    _check_columns(table, source)
    table = table.copy()
    table["path"] = table["path"].astype("string")
    table["patient_id"] = table["patient_id"].astype("string")
    findings = finding_columns(table)

    problems: list[Problem] = []
    not_findings: list[str] = []  # hints: columns whose values are mostly not labels
    bad = np.zeros(len(table), dtype=bool)

    def flag(i: int, reason: str) -> None:
        bad[i] = True
        raw = table["path"].iat[i]
        problems.append(Problem(i + 1, "" if pd.isna(raw) else str(raw), reason))

    for i, pid in enumerate(table["patient_id"]):
        if pd.isna(pid) or not str(pid).strip():
            flag(i, "missing patient_id")
    for i, p in enumerate(table["path"]):
        if pd.isna(p) or not str(p).strip():
            flag(i, "missing path")
    duplicated = table["path"].duplicated(keep="first") & table["path"].notna()
    for i in np.flatnonzero(duplicated.to_numpy()):
        flag(int(i), "duplicate path (already listed above)")
    if "id" in table.columns:
        dup_ids = table["id"].duplicated(keep="first") & table["id"].notna()
        for i in np.flatnonzero(dup_ids.to_numpy()):
            flag(int(i), f"duplicate id '{table['id'].iat[int(i)]}'")
    for col in findings:
        values = pd.to_numeric(table[col], errors="coerce")
        not_numeric = values.isna() & table[col].notna() & (table[col].astype("string").str.strip() != "")
        invalid = not_numeric | (values.notna() & ~values.isin(LABEL_VALUES))
        given = int((table[col].notna() & (table[col].astype("string").str.strip() != "")).sum())
        if given and invalid.sum() > given / 2:  # a column of something else (view, sex, a report): not labels
            examples = ", ".join(repr(str(v)) for v in table.loc[invalid, col].astype("string").unique()[:3])
            not_findings.append(f"column '{col}' ({examples}, ...) looks like no finding: rename it "
                                f"'{META_PREFIX}{col}' to carry it along, never as a label")  # fmt: skip
        for i in np.flatnonzero(invalid.to_numpy()):
            flag(int(i), f"label {col}='{_as_written(table[col].iat[int(i)])}' is not 1, 0, -1 or empty")
        table[col] = values.astype("float32")
    if "split" in table.columns:
        split = table["split"].astype("string").str.strip().str.lower()
        unknown = split.notna() & ~split.isin(SPLITS)
        for i in np.flatnonzero(unknown.to_numpy()):
            flag(int(i), f"split '{table['split'].iat[int(i)]}' is not train, val or test")
        table["split"] = split

    ids = table["id"].astype("string").fillna(table["path"]) if "id" in table.columns else table["path"]  # blank id -> path
    table["id"] = ids
    root = source.parent.resolve()  # once: resolving every row walks the file system per path
    table["path"] = [_absolute(p, root) for p in table["path"]]

    if check_files:
        check = file_check or _default_file_check
        for i, p in enumerate(table["path"]):
            if bad[i] or p is None:
                continue
            try:
                check(Path(p))
            except BadInputError as err:
                flag(i, str(err).removeprefix(f"{p}: "))
            except OSError as err:
                flag(i, f"unreadable ({err.strerror or err})")

    if "split" in table.columns:
        for i in _rows_of_patients_in_several_splits(table, bad):
            flag(i, f"patient '{table['patient_id'].iat[i]}' appears in several splits")

    problems.sort(key=lambda p: p.row)
    if problems and not skip_bad:
        hint = "; ".join(not_findings) if not_findings else skip_hint
        raise BadInputError(_summarise(problems, len(table)) + f" ({hint})", source=str(source))
    table = table.loc[~bad].reset_index(drop=True)
    if table.empty:
        reason = f"no usable rows (first: {problems[0]})" if problems else "the manifest is empty"
        raise BadInputError(reason + (f"; {'; '.join(not_findings)}" if not_findings else ""), source=str(source))
    return Manifest(table, findings, source, problems)


def _as_written(value: object) -> str:
    """A cell as the file most likely wrote it: pandas reads a column of numbers and blanks as floats ("2" -> 2.0)."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def finding_columns(table: pd.DataFrame) -> list[str]:
    """Every column that is not reserved and not ``meta_*`` is a finding."""
    reserved = set(REQUIRED_COLUMNS) | set(OPTIONAL_COLUMNS)
    return [c for c in table.columns if c not in reserved and not str(c).startswith(META_PREFIX)]


def assert_no_patient_leakage(table: pd.DataFrame, *, source: str | None = None) -> None:
    """Raise if any patient has rows in more than one split."""
    if "split" not in table.columns:
        return
    rows = _rows_of_patients_in_several_splits(table, np.zeros(len(table), dtype=bool))
    if rows:
        patients = sorted({str(table["patient_id"].iat[i]) for i in rows})
        raise BadInputError(
            f"{len(patients)} patient(s) appear in several splits, e.g. {patients[:3]}; splits must be patient-level",
            source=source,
        )


def table_hash(table: pd.DataFrame) -> str:
    """A stable sha256 (first 16 hex digits) of a table's content."""
    digest = hashlib.sha256()
    digest.update(",".join(map(str, table.columns)).encode())
    digest.update(pd.util.hash_pandas_object(table.astype("string"), index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV or Parquet table with a clear error when it cannot be read."""
    if not path.exists():
        raise BadInputError("manifest not found", source=str(path))
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype={"path": "string", "patient_id": "string", "id": "string", "study_id": "string"}, keep_default_na=True)
    except pd.errors.EmptyDataError:
        raise BadInputError("the manifest is empty", source=str(path)) from None
    except UnicodeDecodeError as err:
        raise BadInputError(_not_utf8(path, err), source=str(path)) from None
    except (pd.errors.ParserError, ValueError, OSError) as err:
        raise BadInputError(f"cannot be read as a table ({str(err).splitlines()[0]})", source=str(path)) from None


def _not_utf8(path: Path, err: UnicodeDecodeError) -> str:
    """Where a CSV stops being UTF-8: the file line and the data row (the header is line 1)."""
    data = path.read_bytes()
    at = data.find(err.object[err.start : err.end]) if isinstance(err.object, bytes) else -1
    if at < 0:
        return f"is not UTF-8 text ({err.reason}); save it as UTF-8"
    line = data.count(b"\n", 0, at) + 1
    row = f" (data row {line - 1})" if line > 1 else " (the header)"
    return f"is not UTF-8 text: byte 0x{data[at]:02x} on line {line}{row}; save the file as UTF-8"


def write_table(table: pd.DataFrame, path: Path) -> None:
    """Write CSV or Parquet (by extension) atomically."""
    with atomic_output(path) as tmp:  # a failed write (a full disk: one line) leaves no temporary file
        if path.suffix.lower() in (".parquet", ".pq"):
            table.to_parquet(tmp, index=False)
        else:
            table.to_csv(tmp, index=False)


def _check_columns(table: pd.DataFrame, source: Path) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise BadInputError(
            f"missing required column(s) {', '.join(missing)}; a manifest needs at least 'path' and 'patient_id'",
            source=str(source),
        )
    dup = table.columns[table.columns.duplicated()].tolist()
    if dup:
        raise BadInputError(f"duplicate column(s) {', '.join(map(str, dup))}", source=str(source))


def _rows_of_patients_in_several_splits(table: pd.DataFrame, bad: np.ndarray) -> list[int]:
    ok = ~bad & table["split"].notna().to_numpy()
    sub = table.loc[ok, ["patient_id", "split"]]
    counts = sub.groupby("patient_id")["split"].nunique()
    leaking = set(counts.index[counts > 1])
    if not leaking:
        return []
    return [int(i) for i in np.flatnonzero(ok & table["patient_id"].isin(leaking).to_numpy())]


def _summarise(problems: list[Problem], n_rows: int) -> str:
    shown = "; ".join(str(p) for p in problems[:_SHOWN_PROBLEMS])
    more = f"; and {len(problems) - _SHOWN_PROBLEMS} more" if len(problems) > _SHOWN_PROBLEMS else ""
    return f"{len(problems)} problem(s) in {n_rows} rows: {shown}{more}"


def _default_file_check(path: Path) -> None:
    if not path.exists():
        raise BadInputError("file not found", source=str(path))
    if path.is_file() and path.stat().st_size == 0:
        raise BadInputError("file is empty", source=str(path))
    from greenfm.data.readers import probe  # local import: readers pull in heavy optional codecs

    probe(path)


def _absolute(p, root: Path) -> str | None:
    if pd.isna(p):
        return None
    path = Path(str(p))
    try:
        path = path.expanduser()
    except RuntimeError:  # "~someone/..." naming no known user: kept as written, then reported as not found
        pass
    return str(path if path.is_absolute() else Path(os.path.normpath(root / path)))


def _relative_to(p: str, root: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(p)
