"""Rule-based report labeler: offline, fast, the default engine.

Per report: clean the text, split it into sentences, find every mention of
every finding (synonyms, plurals, hyphen/space variants), then decide each
mention from the cues around it (``cues.py``):

- a forward cue ("no", "possible") covers the mentions after it up to a
  terminator ("but", "however", ", a large ..."), the end of the sentence, a
  cue of the other polarity, or the verb that closes the first mentioned item
  ("no effusion is seen and the heart is enlarged");
- a backward cue ("is not seen", "cannot be excluded") covers the list of
  mentions just before it, stopping at a verb, a cue or a comma that does not
  belong to an "X, Y or Z" list;
- an uncertainty cue right after a negation with no mention in between is
  part of the negation ("no findings to suggest pneumonia" is 0);
- when several cues cover a mention the nearest wins, negation on a tie;
- two findings joined by "or" / "versus" with no cue are both uncertain.

Normal statements from the vocabulary ("heart size is normal") give 0.
Mentions under an INDICATION, HISTORY, COMPARISON or TECHNIQUE heading are
ignored: they say why the study was done, not what it shows.

**Several mentions of one finding in a report:** positive beats uncertain
beats negative (1 > -1 > 0), so "no effusion on the left; small right
effusion" is 1; the first mention of the winning code is the evidence.

**No Finding** (``kind: no_finding``) is 0 when any other finding (except
those it ignores) is 1 or -1; otherwise 1 when the report states a normal
study or rules out at least one finding; otherwise blank.

Output codes: 1 / 0 / -1, NaN (blank) when the report does not mention the finding.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from greenfm.labeling.cues import (
    NEG_KINDS,
    POST_KINDS,
    PRE_KINDS,
    UNC_KINDS,
    CueMatcher,
)
from greenfm.labeling.findings import Vocabulary, load_vocabulary
from greenfm.labeling.phrases import PhraseIndex
from greenfm.labeling.results import Evidence, LabelTable, evidence_row
from greenfm.labeling.text import MAX_CHARS, clean_report, split_report, words_of

_CUES = CueMatcher()
_FORWARD_WINDOW = {"neg_pre": 160, "unc_pre": 120, "neg_both": 80, "unc_both": 30}
_BACKWARD_WINDOW = {"neg_post": 100, "unc_post": 100, "neg_both": 60, "unc_both": 30}
# A verb after the first mentioned item closes a forward scope.
_CLOSE_FORWARD = re.compile(
    r"(?<![a-z])(?:is|are|was|were|has|have|had|shows?|showing|demonstrates?|remains?|appears?|seen|noted"
    r"|present|identified)(?![a-z])"
)
# A verb or predicate before a backward cue closes its scope ("heart is enlarged, effusion is not seen").
_CLOSE_BACKWARD = re.compile(
    r"(?<![a-z])(?:is|are|was|were|has|have|had|seen|noted|present|enlarged|identified|demonstrated|shows?"
    r"|showing|with|there)(?![a-z])"
)
_LIST_JOIN = re.compile(r"(?<![a-z])(?:or|and|nor)(?![a-z])")
_ALTERNATIVE = re.compile(r"^\s*,?\s*(?:or|versus|vs\.?|and/or|/)\s*$")
_PRIORITY = {1.0: 3, -1.0: 2, 0.0: 1}


@dataclass(frozen=True)
class ReportLabels:
    """Codes (NaN = blank), evidence per labeled finding and what was odd about the text."""

    codes: dict[str, float]
    evidence: dict[str, Evidence]
    issues: frozenset[str]

    @property
    def failed(self) -> bool:
        return bool({"empty", "non_english"} & self.issues)


class _Cue(NamedTuple):
    start: int
    end: int
    kind: str


class RuleLabeler:
    """Label reports with a vocabulary's phrases and the cue rules of ``cues.py``.

    ``labeler(report)`` returns the list of K codes, so a ``RuleLabeler`` is
    also a plain report -> codes callable.
    """

    engine = "rules"

    def __init__(self, vocabulary: str | Vocabulary = "chexpert14", *, max_chars: int = MAX_CHARS):
        self.vocabulary = load_vocabulary(vocabulary)
        self.max_chars = max_chars
        self._findings = self.vocabulary.findings
        self._index = PhraseIndex(self._findings)
        self._kinds = {f.id: f.kind for f in self._findings}
        self._has_no_finding = any(f.kind == "no_finding" for f in self._findings)

    @property
    def source(self) -> dict[str, str]:
        return {"engine": self.engine, "vocabulary": self.vocabulary.tag}

    def __call__(self, report: object) -> list[float]:
        codes = self.label(report).codes
        return [codes[i] for i in self.vocabulary.ids]

    def label(self, report: object) -> ReportLabels:
        clean = clean_report(report, max_chars=self.max_chars)
        ids = self.vocabulary.ids
        if {"empty", "non_english"} & clean.issues:
            return ReportLabels(dict.fromkeys(ids, float("nan")), {}, clean.issues)
        low = clean.text.lower()
        text = clean.text if len(low) == len(clean.text) else low
        best = self._decide(low, text)
        if self._has_no_finding:
            self._derive_no_finding(best)
        codes = {fid: best[fid].code if fid in best else float("nan") for fid in ids}
        return ReportLabels(codes, best, clean.issues)

    def label_many(self, reports: Iterable[object]) -> LabelTable:
        ids = self.vocabulary.ids
        results = [self.label(r) for r in reports]
        codes = np.full((len(results), len(ids)), np.nan, dtype=np.float32)
        evidence, issues = [], []
        for i, res in enumerate(results):
            codes[i] = [res.codes[f] for f in ids]
            evidence += [evidence_row(i, f, ev) for f, ev in res.evidence.items()]
            issues.append(res.issues)
        failed = np.array([r.failed for r in results], dtype=bool)
        return LabelTable(ids, codes, evidence, issues, failed, dict(self.source))

    # -- one report -------------------------------------------------------------------------------

    def _decide(self, low: str, text: str) -> dict[str, Evidence]:
        words = words_of(low)
        hits = self._index.find(low, words)
        if not hits:
            return {}
        spans, skipped = split_report(low)
        starts = [s for s, _ in spans]
        if skipped:  # indication, history, technique...: not what the image shows
            hits = {key: kept for key, found in hits.items()
                    if (kept := [m for m in found if not any(a <= m[0] < b for a, b in skipped)])}
        decisions: list[tuple[int, int, float, str, int]] = []  # (start, end, code, cue, finding index)
        mentions: list[tuple[int, int, int]] = []  # (start, end, finding index)
        for (k, role), found in hits.items():
            kind = self._findings[k].kind
            if role == "normal" and kind == "finding":
                decisions.append((*found[0], 0.0, "normal statement", k))
            if role != "mention":
                continue
            blocked = hits.get((k, "exclude"))
            if blocked:
                found = [m for m in found if not any(b0 < m[1] and m[0] < b1 for b0, b1 in blocked)]
            if kind == "no_finding":  # statements of a normal study: no cue applies
                decisions += [(s, e, 1.0, "", k) for s, e in found[:1]]
            else:
                mentions += [(s, e, k) for s, e in found]
        if mentions:
            decisions += self._decide_mentions(low, words, sorted(mentions), spans, starts)
        chosen: dict[int, tuple[int, int, float, str, int]] = {}
        for d in sorted(decisions):  # in text order, so the first mention of the winning code is kept
            old = chosen.get(d[4])
            if old is None or _PRIORITY[d[2]] > _PRIORITY[old[2]]:
                chosen[d[4]] = d
        return {
            self._findings[k].id: _evidence(code, s, e, cue, text, spans, starts)
            for k, (s, e, code, cue, _) in chosen.items()
        }

    def _decide_mentions(self, low: str, words: set[str], mentions: list, spans, starts) -> list[tuple]:
        cues = [_Cue(*c) for c in _CUES.find(low, words)]
        cue_starts = [c.start for c in cues]
        by_sentence: dict[int, list] = {}
        for m in mentions:
            by_sentence.setdefault(bisect_right(starts, m[0]) - 1, []).append(m)
        out = []
        for si, group in by_sentence.items():
            s0, s1 = spans[si]
            sent_cues = cues[bisect_right(cue_starts, s0 - 1) : bisect_right(cue_starts, s1 - 1)]
            scopes = _scopes(low, s0, s1, sent_cues, group) if sent_cues else []
            for j, (ms, me, k) in enumerate(group):
                code, cue = _status(ms, me, scopes, low) if scopes else (1.0, "")
                if code == 1.0 and len(group) > 1 and _is_alternative(group, j, low):
                    code, cue = -1.0, "or"
                out.append((ms, me, code, cue, k))
        return out

    def _derive_no_finding(self, best: dict[str, Evidence]) -> None:
        for f in self._findings:
            if f.kind != "no_finding":
                continue
            others = [(fid, ev) for fid, ev in best.items() if fid != f.id and fid not in f.ignore]
            positive = [(fid, ev) for fid, ev in others if ev.code != 0.0 and self._kinds[fid] == "finding"]
            if positive:
                fid, ev = positive[0]
                best[f.id] = Evidence(0.0, ev.start, ev.end, ev.mention, f"{fid} is {ev.code:g}", ev.sentence)
            elif f.id not in best and others:
                fid, ev = others[0]
                best[f.id] = Evidence(1.0, ev.start, ev.end, ev.mention, f"only negative findings ({fid})", ev.sentence)


# -- scopes -----------------------------------------------------------------------------------


def _scopes(low: str, s0: int, s1: int, cues: list[_Cue], mentions: list) -> list[tuple]:
    """(cue, direction, lo, hi) for every cue: a forward scope is [cue.end, hi], backward [lo, cue.start]."""
    absorbed: set[int] = set()
    out: list[tuple] = []
    for i, c in enumerate(cues):
        if i in absorbed or c.kind in ("term", "pseudo"):
            continue
        if c.kind in PRE_KINDS:
            hi = min(s1, c.end + _FORWARD_WINDOW[c.kind])
            negative = c.kind in NEG_KINDS
            for j in range(i + 1, len(cues)):
                d = cues[j]
                if d.start >= hi:
                    break
                if d.kind in ("term", "pseudo"):
                    hi = d.start
                    break
                if negative and d.kind in UNC_KINDS:
                    if any(c.end <= m[0] < d.start for m in mentions):
                        hi = d.start
                        break
                    absorbed.add(j)  # "no findings to suggest pneumonia": still a negation
                    continue
                if d.kind in PRE_KINDS and (d.kind in NEG_KINDS) != negative:
                    hi = d.start
                    break
            first = next((m for m in mentions if c.end <= m[0] < hi), None)
            if first is not None:
                closing = _CLOSE_FORWARD.search(low, first[1], hi)
                if closing:
                    hi = closing.start()
            out.append((c, "forward", c.end, hi))
        if c.kind in POST_KINDS:
            lo = max(s0, c.start - _BACKWARD_WINDOW[c.kind])
            if i > 0 and cues[i - 1].end > lo:
                lo = cues[i - 1].end
            closing = None
            for closing in _CLOSE_BACKWARD.finditer(low, lo, c.start):
                pass
            if closing is not None:
                lo = closing.end()
            segment = low[lo : c.start]
            comma = segment.rfind(",")
            if comma >= 0 and not _LIST_JOIN.search(segment, comma):
                lo += comma + 1
            out.append((c, "backward", lo, c.start))
    return out


def _status(ms: int, me: int, scopes: list[tuple], low: str) -> tuple[float, str]:
    best: tuple[int, int, _Cue] | None = None
    for c, direction, lo, hi in scopes:
        if direction == "forward" and c.end <= ms and me <= hi:
            distance = ms - c.end
        elif direction == "backward" and c.start >= me and ms >= lo:
            distance = c.start - me
        else:
            continue
        rank = (distance, 0 if c.kind in NEG_KINDS else 1)
        if best is None or rank < best[:2]:
            best = (*rank, c)
    if best is None:
        return 1.0, ""
    c = best[2]
    return (0.0 if c.kind in NEG_KINDS else -1.0), low[c.start : c.end]


def _is_alternative(group: list, j: int, low: str) -> bool:
    """True when mention j is joined to another finding's mention by 'or' / 'versus'."""
    ms, me, k = group[j]
    for other in (group[j - 1] if j > 0 else None, group[j + 1] if j + 1 < len(group) else None):
        if other is None or other[2] == k:
            continue
        gap = low[other[1] : ms] if other[1] <= ms else low[me : other[0]] if me <= other[0] else None
        if gap is not None and _ALTERNATIVE.match(gap):
            return True
    return False


# -- evidence ------------------------------------------------------------------------------------


def _evidence(code: float, s: int, e: int, cue: str, text: str, spans, starts) -> Evidence:
    s0, s1 = spans[bisect_right(starts, s) - 1]
    sentence = text[s0:s1].strip()
    if len(sentence) > 240:
        sentence = sentence[:237] + "..."
    return Evidence(code, s0, s1, text[s:e], cue, sentence)
