"""What a labeler returns for a batch of reports, whatever the engine."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

CODES = (1.0, 0.0, -1.0)
"""1 present, 0 absent, -1 uncertain; NaN (blank) means not mentioned or not labeled."""


@dataclass(frozen=True)
class Evidence:
    """Why a finding got its code: the deciding sentence, the mention and the cue."""

    code: float
    start: int
    end: int
    mention: str
    cue: str
    sentence: str


@dataclass
class LabelTable:
    """Codes for N reports and K findings, with evidence and per-report problems.

    ``failed[i]`` is True when report i could not be labeled at all (empty,
    non-English, or every LLM attempt failed); its codes are all NaN.
    ``issues[i]`` names what was odd about report i (``empty``, ``html``,
    ``decode``, ``long``, ``non_english``, or an LLM failure cause).
    """

    findings: list[str]
    codes: np.ndarray
    evidence: list[dict[str, Any]] = field(default_factory=list)
    issues: list[frozenset[str]] = field(default_factory=list)
    failed: np.ndarray | None = None
    source: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.codes.shape[0]
        if not self.issues:
            self.issues = [frozenset()] * n
        if self.failed is None:
            self.failed = np.zeros(n, dtype=bool)

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    def frame(self, index: Any = None) -> pd.DataFrame:
        """The codes as a DataFrame with one float column per finding id."""
        return pd.DataFrame(self.codes, columns=self.findings, index=index)

    def evidence_frame(self, ids: list[str] | None = None) -> pd.DataFrame:
        """Evidence in long form: one row per (report, finding) that got a code."""
        columns = ["row", "id", "finding", "code", "mention", "cue", "sentence", "start", "end"]
        rows = [dict(r) for r in self.evidence]
        for r in rows:
            r["id"] = ids[r["row"]] if ids is not None else r["row"]
        return pd.DataFrame(rows, columns=columns)

    def issue_counts(self) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for row in self.issues:
            counts.update(row)
        return dict(sorted(counts.items()))


def evidence_row(row: int, finding: str, ev: Evidence) -> dict[str, Any]:
    return {
        "row": row, "finding": finding, "code": ev.code, "mention": ev.mention, "cue": ev.cue,
        "sentence": ev.sentence, "start": ev.start, "end": ev.end,
    }
