"""The GreenRFM labelling prompt and its strict parser (METHODS 3.2).

System prompt: a radiologist persona; the K findings as a numbered list to be
classified in that order; codes 1 (explicitly present), 0 (explicitly ruled
out or absent), -1 (ambiguous, uncertain or not covered: uncertain and
unmentioned share -1); "return only K comma-separated numbers" and one example
line. The user message is the report itself.

Parsing: split on commas and strip; more than K tokens keep the first K;
fewer than K, or a token outside {1, 0, -1}, is a failed attempt.
``PROMPT_VERSION`` changes whenever the wording does; with the prompt text it
makes ``prompt_hash``, which is stored with every label and keys the cache.
"""

from __future__ import annotations

import hashlib

from greenfm.labeling.findings import Vocabulary

PROMPT_VERSION = "greenrfm-v1"
_CODES = {"1": 1, "0": 0, "-1": -1}
_EXAMPLE_CYCLE = (0, 1, -1, -1, 0, 0, 1, -1, 0, -1)


class ParseError(ValueError):
    """The model's answer is not K codes."""


def system_prompt(vocabulary: Vocabulary) -> str:
    k = len(vocabulary)
    numbered = "\n".join(f"{i}. {f.prompt_name}" for i, f in enumerate(vocabulary.findings, start=1))
    example = ",".join(str(_EXAMPLE_CYCLE[i % len(_EXAMPLE_CYCLE)]) for i in range(k))
    return (
        "You are an experienced board-certified radiologist who reads radiology reports.\n\n"
        f"Classify the report for the following {k} findings, in exactly this order:\n"
        f"{numbered}\n\n"
        "Codes:\n"
        "1 = the finding is explicitly present\n"
        "0 = the finding is explicitly ruled out or absent\n"
        "-1 = the report is ambiguous or uncertain about the finding, or does not cover it\n\n"
        f"Return only {k} comma-separated numbers, in the order above, and nothing else.\n"
        f"Example:\n{example}"
    )


def prompt_hash(vocabulary: Vocabulary) -> str:
    """First 12 hex digits of sha256(version + system prompt)."""
    return hashlib.sha256(f"{PROMPT_VERSION}\n{system_prompt(vocabulary)}".encode()).hexdigest()[:12]


def parse_codes(answer: str, k: int) -> list[int]:
    """K codes from the model's answer, or ParseError."""
    tokens = [t.strip() for t in str(answer).strip().split(",")]
    if len(tokens) < k:
        raise ParseError(f"expected {k} comma-separated codes, got {len(tokens)}")
    tokens = tokens[:k]
    bad = [t for t in tokens if t not in _CODES]
    if bad:
        raise ParseError(f"invalid code(s) {bad[:3]}")
    return [_CODES[t] for t in tokens]
