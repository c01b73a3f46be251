"""Report text hygiene: cleaning, sentence spans and a cheap language check.

Reports arrive with HTML, odd encodings, control characters, bullets and
headings. ``clean_report`` turns any of them into plain text and names what it
had to fix, so that callers can count problems instead of crashing.
"""

from __future__ import annotations

import html
import math
import re
import unicodedata
from dataclasses import dataclass

MAX_CHARS = 20_000
"""Longer reports are cut here (a typical report is well under 3,000 characters)."""

_TAG = re.compile(r"<(?:/?[a-zA-Z][a-zA-Z0-9]*\b[^<>]*|!--.*?--)>", re.DOTALL)
_BLOCK_TAG = re.compile(r"<(?:br|/p|/div|/li|/tr|/h[1-6])\b[^<>]*>", re.IGNORECASE)
_SPACES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f \t\u00a0]+")  # control characters too
_ODD_SPACE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\t\u00a0]|  ")
_BLANK_LINES = re.compile(r"\n\s*\n\s*")
_WORD = re.compile(r"[^\W\d_]+")

# A sentence ends at . ! ? followed by space, at ; , at a blank line, before a
# bullet or numbered item, and around section headings such as "IMPRESSION:".
_BOUNDARY = re.compile(r"[.!?;\n:]")
_END_MARK = re.compile(r"[.!?]+(?=\s|$)|;|\n\s*\n|\n(?=\s*(?:[-*\u2022]|\d+[.)])\s)")
_HEADING = re.compile(
    r"(?<![a-z])(?:findings|impression|conclusions?|indications?|clinical indication|history|clinical history"
    r"|clinical information|reason for (?:exam|examination|study)|comparison|technique"
    r"|recommendations?|imaging notes|discussion|presentation)\s*$"
)
# Sections that say why the study was done or how, not what it shows: their
# mentions ("INDICATION: evaluate for pneumonia") are not labels.
SKIPPED_SECTIONS = frozenset({
    "indication", "indications", "clinical indication", "history", "clinical history", "clinical information",
    "reason for exam", "reason for examination", "reason for study", "comparison", "technique",
})
_ABBREVIATIONS = frozenset({"dr", "vs", "e.g", "i.e", "approx", "mr", "mrs", "ms", "st", "fig", "cf", "resp"})

_ENGLISH = frozenset((  # function words of English
    "the", "is", "are", "of", "and", "no", "with", "there", "in", "to", "not",
    "without", "for", "on", "was", "were", "seen",
))
_FOREIGN = frozenset((  # Spanish, German, French, Italian, Portuguese
    "de", "la", "el", "los", "las", "y", "con", "sin", "del", "der", "die", "das",
    "und", "mit", "ohne", "nicht", "le", "les", "des", "et", "avec", "sans", "une",
    "il", "della", "delle", "senza", "em", "que", "um", "uma",
))

_SEPARATORS = str.maketrans({c: " " for c in map(chr, range(128)) if not c.isalnum()})
_ALNUM_RUN = re.compile(r"[a-z0-9]+")


def words_of(low: str) -> set[str]:
    """The maximal runs of a-z / 0-9 in lower-cased text, as a set (what phrase gates look up)."""
    if low.isascii():
        return set(low.translate(_SEPARATORS).split())
    return set(_ALNUM_RUN.findall(low))


@dataclass(frozen=True)
class CleanReport:
    """The cleaned text and what had to be fixed (``empty``, ``html``, ``decode``, ``long``, ``non_english``)."""

    text: str
    issues: frozenset[str]


def clean_report(raw: object, *, max_chars: int = MAX_CHARS) -> CleanReport:
    """Plain, normalised report text; never raises on odd input."""
    issues: set[str] = set()
    if raw is None or (isinstance(raw, float) and math.isnan(raw)) or type(raw).__name__ == "NAType":
        return CleanReport("", frozenset({"empty"}))
    if isinstance(raw, (bytes, bytearray)):
        raw = bytes(raw).decode("utf-8", errors="replace")
    text = raw if isinstance(raw, str) else str(raw)
    if "\ufffd" in text:
        issues.add("decode")
    if "<" in text and _TAG.search(text):
        issues.add("html")
        text = _TAG.sub(" ", _BLOCK_TAG.sub("\n", text))
    if "&" in text:
        text = html.unescape(text)
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if _ODD_SPACE.search(text):
        text = _SPACES.sub(" ", text)
    if "\n" in text:
        text = _BLANK_LINES.sub("\n\n", text)
    text = text.strip()
    if len(text) > max_chars:
        issues.add("long")
        text = text[:max_chars]
    if not text:
        issues.add("empty")
    elif not looks_english(text):
        issues.add("non_english")
    return CleanReport(text, frozenset(issues))


def looks_english(text: str) -> bool:
    """False for text that is mostly non-Latin script or whose function words are not English."""
    if not text.isascii():
        letters = _WORD.findall(text)
        total = sum(len(w) for w in letters)
        if total == 0 or sum(len(w) for w in letters if w.isascii()) < 0.5 * total:
            return False
    words = words_of(text[:4000].lower())
    english, foreign = len(words & _ENGLISH), len(words & _FOREIGN)
    if not english and not foreign and not _WORD.search(text):
        return False
    return not (foreign >= 2 and foreign > english)


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence or clause-like segment; blank segments are left out."""
    return split_report(text)[0]


def split_report(text: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Sentence spans, and the (start, end) ranges of sections in ``SKIPPED_SECTIONS``.

    A skipped section ends at the next heading or blank line; one that would
    run to the end of the report covers only its first sentence
    ("COMPARISON: None. No effusion." keeps "No effusion.").
    """
    spans: list[tuple[int, int]] = []
    skipped: list[tuple[int, int]] = []
    skip_from: int | None = None
    first_end = 0
    start = 0
    for m in _BOUNDARY.finditer(text):
        i = m.start()
        if i < start:
            continue
        ch = text[i]
        if ch == ":":  # a heading ("IMPRESSION:") is a segment of its own and starts a section
            lo = max(start, i - 30)
            head = _HEADING.search(text[lo:i].lower())
            if head is None:
                continue
            at = lo + head.start()
            if at > start:
                spans.append((start, at))
            spans.append((at, i + 1))
            if skip_from is not None:
                skipped.append((skip_from, at))
            skip_from = at if " ".join(head.group().split()) in SKIPPED_SECTIONS else None
            first_end = 0
            start = i + 1
            continue
        end = _END_MARK.match(text, i)
        if end is None or (ch == "." and _is_abbreviation(text, i)):
            continue
        spans.append((start, end.end()))
        start = end.end()
        if skip_from is not None:
            if text.count("\n", i, end.end()) >= 2:  # a blank line closes the section
                skipped.append((skip_from, end.end()))
                skip_from = None
            elif not first_end and not text[skip_from:i].rstrip().endswith(":"):
                first_end = end.end()
    if start < len(text):
        spans.append((start, len(text)))
    if skip_from is not None:
        skipped.append((skip_from, first_end or len(text)))
    return [(s, e) for s, e in spans if not (text[e - 1].isspace() and text[s:e].isspace())], skipped


def _is_abbreviation(text: str, dot: int) -> bool:
    if dot == 0 or not text[dot - 1].isalpha():
        return False
    space = max(text.rfind(" ", max(0, dot - 8), dot), text.rfind("(", max(0, dot - 8), dot))
    return text[space + 1 : dot].lower() in _ABBREVIATIONS
