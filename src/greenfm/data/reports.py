"""Report texts beside the images: the manifest's ``report`` column in every batch.

``manifest_reports`` reads and checks the column (missing column and empty reports are
one-line errors naming the manifest and the first offending row); ``fill_missing_reports``
puts texts (e.g. template reports rendered from the labels) where a row has none;
``WithReports`` adds each item's ``report`` to an image dataset's items.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
from torch.utils.data import Dataset

from greenfm.data.manifest import Manifest
from greenfm.errors import BadInputError


def _where(manifest: Manifest) -> str | None:
    return str(manifest.source) if manifest.source else None


def has_reports(manifest: Manifest) -> bool:
    return "report" in manifest.table.columns


def report_column(manifest: Manifest) -> list[str | None]:
    """Each row's report, ``None`` where it is missing or blank (no column: all ``None``)."""
    if not has_reports(manifest):
        return [None] * len(manifest)
    out: list[str | None] = []
    for value in manifest.table["report"].tolist():
        text = "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value).strip()
        out.append(text or None)
    return out


def manifest_reports(manifest: Manifest, *, what: str = "an image-text recipe") -> list[str]:
    """Every row's report text; refuses a manifest without the column or with an empty report."""
    if not has_reports(manifest):
        raise BadInputError(
            f"{what} needs a 'report' column; add reports, or pass --text-from-labels to render template "
            "reports from the label columns",
            source=_where(manifest),
        )
    return require_texts(manifest, report_column(manifest))


def require_texts(manifest: Manifest, texts: Sequence[str | None]) -> list[str]:
    """``texts`` unchanged when none is empty, else one line naming how many and the first row."""
    empty = [i for i, text in enumerate(texts) if not text]
    if empty:
        row = manifest.table.iloc[empty[0]]
        raise BadInputError(
            f"{len(empty)} row(s) have an empty report, first id {row['id']} ({row['path']}); fill them, drop them, "
            "or pass --text-from-labels to render template reports from the labels",
            source=_where(manifest),
        )
    return [str(t) for t in texts]


def fill_missing_reports(texts: Sequence[str | None], fill: Sequence[str]) -> tuple[list[str | None], int]:
    """``texts`` with each missing one replaced from ``fill``; and how many were filled."""
    out, filled = [], 0
    for text, replacement in zip(texts, fill):
        if text:
            out.append(text)
        else:
            out.append(replacement or None)
            filled += 1
    return out, filled


class WithReports(Dataset):
    """An image dataset whose items also carry ``report``: ``reports[item["index"]]``.

    ``reports`` is aligned with ``dataset.manifest`` (the rows the dataset serves).
    """

    def __init__(self, dataset: Any, reports: Sequence[str]):
        if len(reports) != len(dataset.manifest):
            raise ValueError(f"{len(reports)} reports for {len(dataset.manifest)} manifest rows")
        self.dataset, self.reports = dataset, list(reports)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:  # contract, manifest, findings ... of the image dataset
        if name in ("dataset", "reports"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def _add(self, item: dict[str, Any]) -> dict[str, Any]:
        item["report"] = self.reports[item["index"]]
        return item

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._add(self.dataset[index])

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        return [self._add(item) for item in self.dataset.__getitems__(indices)]
