"""Byte-identical image files in a manifest: the same picture under two paths, maybe in two splits.

Files are grouped by size first and only same-size files are hashed (sha256), so a
manifest of distinct images costs one ``stat`` per row.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import pandas as pd


@dataclass
class DuplicateReport:
    groups: list[list[int]]  # row positions holding the same bytes, two or more per group
    across_splits: list[list[int]]  # the groups whose rows lie in more than one split

    def summary(self, table: pd.DataFrame) -> str:
        if not self.groups:
            return "no byte-identical files"
        text = f"{len(self.groups)} group(s) of byte-identical files ({sum(len(g) for g in self.groups)} rows)"
        if self.across_splits:
            first = self.across_splits[0]
            example = " = ".join(f"{table['path'].iat[i]} ({table['split'].iat[i]})" for i in first[:2])
            text += f"; {len(self.across_splits)} of them span splits (e.g. {example}): the same image in train and test"
        return text


def identical_files(table: pd.DataFrame) -> DuplicateReport:
    """Groups of rows whose files hold identical bytes (directories, e.g. DICOM series, are left out)."""
    sizes: dict[int, list[int]] = {}
    for i, path in enumerate(table["path"]):
        try:
            if os.path.isfile(path):
                sizes.setdefault(os.path.getsize(path), []).append(i)
        except OSError:
            continue
    by_hash: dict[str, list[int]] = {}
    for rows in sizes.values():
        if len(rows) < 2:
            continue
        for i in rows:
            digest = hashlib.sha256()
            with open(table["path"].iat[i], "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            by_hash.setdefault(digest.hexdigest(), []).append(i)
    groups = [rows for rows in by_hash.values() if len(rows) > 1]
    across = []
    if "split" in table.columns:
        across = [g for g in groups if table["split"].iloc[g].astype("string").nunique(dropna=False) > 1]
    return DuplicateReport(groups, across)
