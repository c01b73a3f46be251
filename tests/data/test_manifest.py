"""The manifest loader: the format, and one-line errors for every kind of bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from greenfm.data.manifest import load_manifest
from greenfm.errors import BadInputError


@pytest.fixture
def images(tmp_path) -> Path:
    folder = tmp_path / "img"
    folder.mkdir()
    for i in range(6):
        Image.fromarray(np.full((8, 8), i * 20, np.uint8)).save(folder / f"{i}.png")
    return folder


def _write(tmp_path: Path, rows: list[dict], name: str = "m.csv") -> Path:
    path = tmp_path / name
    frame = pd.DataFrame(rows)
    frame.to_parquet(path, index=False) if name.endswith(".parquet") else frame.to_csv(path, index=False)
    return path


def _rows(n: int = 4, **extra) -> list[dict]:
    rows = [{"path": f"img/{i}.png", "patient_id": f"p{i}", "effusion": i % 2, "split": "train"} for i in range(n)]
    for row in rows:
        row.update(extra)
    return rows


def _error(path: Path, **kwargs) -> str:
    with pytest.raises(BadInputError) as err:
        load_manifest(path, **kwargs)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    return message


def test_a_good_manifest(tmp_path, images):
    rows = _rows(4)
    rows[1]["effusion"] = None
    rows[2].update(effusion=-1, meta_site="A", report="small effusion", id="x2")
    manifest = load_manifest(_write(tmp_path, rows))
    assert manifest.findings == ["effusion"] and len(manifest) == 4 and not manifest.problems
    labels = manifest.labels()
    assert np.isnan(labels[1, 0]) and labels[2, 0] == -1 and labels.dtype == np.float32
    assert Path(manifest.table["path"].iloc[0]) == images / "0.png"  # relative to the manifest's folder
    assert manifest.table["id"].tolist() == ["img/0.png", "img/1.png", "x2", "img/3.png"]  # blank id -> path
    parquet = load_manifest(_write(tmp_path, rows, "m.parquet"))
    assert parquet.hash == manifest.hash


def test_missing_required_column(tmp_path, images):
    rows = [{"path": r["path"], "effusion": 1} for r in _rows(2)]
    assert "missing required column(s) patient_id" in _error(_write(tmp_path, rows))


def test_duplicated_rows(tmp_path, images):
    rows = _rows(3)
    rows.append(dict(rows[0]))
    message = _error(_write(tmp_path, rows))
    assert "row 5 (img/0.png): duplicate path" in message and "1 problem(s) in 4 rows" in message


def test_patient_in_two_splits(tmp_path, images):
    rows = _rows(4)
    rows[3].update(patient_id="p0", split="test")
    message = _error(_write(tmp_path, rows))
    assert "patient 'p0' appears in several splits" in message and "row 2" in message and "row 5" in message
    kept = load_manifest(tmp_path / "m.csv", skip_bad=True)
    assert len(kept) == 2 and len(kept.problems) == 2


def test_empty_manifests(tmp_path):
    (tmp_path / "blank.csv").write_text("")
    assert "empty" in _error(tmp_path / "blank.csv")
    (tmp_path / "header.csv").write_text("path,patient_id,effusion\n")
    assert "the manifest is empty" in _error(tmp_path / "header.csv")


def test_unknown_label_and_split_values(tmp_path, images):
    rows = _rows(4)
    rows[1]["effusion"] = "yes"
    rows[2]["effusion"] = 2
    rows[3]["split"] = "holdout"
    message = _error(_write(tmp_path, rows))
    assert "3 problem(s)" in message and "row 3 (img/1.png): label effusion='yes'" in message
    assert "row 4" in message and "row 5" in message and "holdout" in message


def test_missing_and_unreadable_files_skip_and_count(tmp_path, images):
    rows = _rows(6)
    (images / "3.png").unlink()
    (images / "4.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    path = _write(tmp_path, rows)
    message = _error(path)
    assert "2 problem(s) in 6 rows" in message and "row 5" in message and "file not found" in message
    assert "--skip-bad" in message
    manifest = load_manifest(path, skip_bad=True)
    assert len(manifest) == 4 and [p.row for p in manifest.problems] == [4, 5]
    assert "corrupt" in manifest.problems[1].reason
    assert len(load_manifest(path, check_files=False)) == 6


def test_missing_patient_and_path_cells(tmp_path, images):
    rows = _rows(3)
    rows[0]["patient_id"] = None
    rows[1]["path"] = None
    message = _error(_write(tmp_path, rows))
    assert "row 2 (img/0.png): missing patient_id" in message and "row 3: missing path" in message


def test_many_problems_stay_on_one_line(tmp_path, images):
    rows = _rows(6, effusion="maybe")
    message = _error(_write(tmp_path, rows))
    assert "6 problem(s)" in message and "and 3 more" in message
    with pytest.raises(BadInputError, match="no usable rows"):
        load_manifest(tmp_path / "m.csv", skip_bad=True)


def test_missing_or_unreadable_manifest(tmp_path):
    assert "manifest not found" in _error(tmp_path / "absent.csv")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    assert "cannot be read as a table" in _error(tmp_path / "bad.parquet")


def test_a_text_column_is_named_and_meta_is_suggested_even_with_skip_bad(tmp_path, images):
    path = _write(tmp_path, _rows(4, view="PA"))
    for kwargs in ({}, {"skip_bad": True}):
        message = _error(path, **kwargs)
        assert "column 'view'" in message and "meta_view" in message
    renamed = _write(tmp_path, _rows(4, meta_view="PA"), "ok.csv")
    assert load_manifest(renamed).findings == ["effusion"]


def test_a_non_utf8_manifest_names_the_line_and_row(tmp_path, images):
    path = tmp_path / "latin1.csv"
    path.write_bytes("path,patient_id,effusion\nimg/0.png,p0,1\nimg/1.png,Zo\xe9,0\n".encode("latin-1"))
    message = _error(path)
    assert "not UTF-8" in message and "line 3 (data row 2)" in message and "0xe9" in message


def test_problem_rows_are_numbered_as_a_spreadsheet_shows_them():
    """The header is row 1, so the first data row is row 2."""
    from greenfm.data.manifest import Problem

    assert str(Problem(1, "a.png", "file not found")) == "row 2 (a.png): file not found"
