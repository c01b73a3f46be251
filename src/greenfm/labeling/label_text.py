"""Texts rendered from structured labels, for image-report-label contrastive learning (METHODS 5.2).

``whole``: "Findings: a, b, c." in vocabulary order, or "No finding." when every known
label is absent; ``per_finding``: one "There is {p}." / "There is no {p}." for a finding
drawn among the row's known labels. Uncertain (-1) and unknown (NaN) findings are never
mentioned. Identical texts are positives of one another, so each text carries a stable
64-bit id (a hash of the text): the same text gets the same id in every process and run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

NO_FINDING = "No finding."


def prompt_name(finding: str) -> str:
    """A finding id as it reads in a sentence: lower case, underscores as spaces (METHODS 3.8)."""
    return finding.replace("_", " ").lower().strip()


def text_id(text: str) -> int:
    """A stable non-negative 63-bit id of a text (blake2b), equal across processes and runs."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big") >> 1


def whole_label_text(codes: Sequence[float], findings: Sequence[str]) -> str | None:
    """The row's present findings as one sentence; None when no label of the row is known."""
    codes = np.asarray(codes, dtype=np.float64)
    present = [prompt_name(f) for f, c in zip(findings, codes) if c == 1]
    if present:
        return f"Findings: {', '.join(present)}."
    if np.any(codes == 0):
        return NO_FINDING
    return None


def per_finding_label_text(codes: Sequence[float], findings: Sequence[str], rng: np.random.Generator) -> str | None:
    """One sentence about one finding drawn among the row's known (1 or 0) labels; None if none is known."""
    codes = np.asarray(codes, dtype=np.float64)
    known = np.flatnonzero((codes == 1) | (codes == 0))
    if len(known) == 0:
        return None
    k = int(known[rng.integers(len(known))])
    name = prompt_name(findings[k])
    return f"There is {name}." if codes[k] == 1 else f"There is no {name}."
