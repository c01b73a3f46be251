"""``data check`` reports byte-identical files, and those that span splits."""

from __future__ import annotations

import pandas as pd

from greenfm.data.duplicates import identical_files


def test_identical_files_across_splits_are_reported(tmp_path):
    for name, content in (("a", b"same"), ("b", b"same"), ("c", b"diff"), ("d", b"more")):
        (tmp_path / f"{name}.png").write_bytes(content)
    table = pd.DataFrame({"path": [str(tmp_path / f"{n}.png") for n in "abcd"],
                          "split": ["train", "test", "train", "train"]})  # fmt: skip
    report = identical_files(table)
    assert report.groups == [[0, 1]] and report.across_splits == [[0, 1]]
    assert "span splits" in report.summary(table) and "a.png (train)" in report.summary(table)
    assert identical_files(table.iloc[2:]).summary(table.iloc[2:]) == "no byte-identical files"
