"""Vocabulary phrases compiled into one fast matcher.

Every phrase (a finding's synonyms, normal statements and exclusions) becomes
a small regex plus the substrings one of which any match must contain
(``anchors.py``). Per report, one pass of C-speed substring tests picks the
few phrases that can match; only those regexes run. Matches must start and end
at a word boundary; overlapping matches of one (finding, role) keep the
longest.
"""

from __future__ import annotations

import re
from collections import defaultdict

from greenfm.labeling.anchors import required_substrings
from greenfm.labeling.findings import Finding

ROLES = ("mention", "normal", "exclude")
_END = r"(?![a-z0-9])"


def _plural_forms(word: str) -> set[str]:
    if word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
        return {word, word[:-1] + "ies"}
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return {word, word + "es"}
    if word.endswith("a"):
        return {word, word + "e", word + "s"}
    return {word, word + "s"}


def first_words(phrase: str, *, plural: bool = True) -> set[str] | None:
    """Words one of which the text must contain for a plain phrase to match; None if not plain."""
    if phrase.startswith("re:"):
        return None
    words = phrase.lower().split()
    if not words[0].isalnum():
        return None
    if len(words) == 1 and plural and words[0][-1].isalpha():
        return _plural_forms(words[0])
    return {words[0]}


def phrase_pattern(phrase: str, *, plural: bool = True) -> str:
    """A vocabulary phrase as a regex body over lower-cased text.

    ``re:`` phrases are used as written. Otherwise words match across any
    whitespace or a hyphen, hyphenated words also without it, and the last word
    also in its plural (``opacity`` -> ``opacities``, ``mass`` -> ``masses``).
    """
    if phrase.startswith("re:"):
        return "(?:" + phrase[3:] + ")"
    words = phrase.lower().split()
    parts = [r"[\s-]?".join(re.escape(piece) for piece in w.split("-")) for w in words]
    last = words[-1]
    if plural and last[-1].isalpha():  # the same forms as _plural_forms
        if last.endswith("y") and len(last) > 1 and last[-2] not in "aeiou":
            parts[-1] = parts[-1][:-1] + "(?:y|ies)"
        elif last.endswith(("s", "x", "z", "ch", "sh")):
            parts[-1] += "(?:es)?"
        elif last.endswith("a"):
            parts[-1] += "(?:e|s)?"
        else:
            parts[-1] += "s?"
    return r"[\s-]+".join(parts)


class PhraseIndex:
    """All phrases of a vocabulary; ``find(low, words)`` maps (finding index, role) to spans.

    A plain phrase runs only when the text holds its first word (a set
    intersection); a ``re:`` phrase only when it holds one of its required
    substrings. A pattern shared by several findings ("lungs are clear" for
    opacity and consolidation) is compiled and run once.
    """

    def __init__(self, findings: tuple[Finding, ...]):
        owners: dict[str, list[tuple[int, str]]] = {}
        gates: dict[str, set[str] | None] = {}
        for k, f in enumerate(findings):
            for role, phrases in zip(ROLES, (f.synonyms, f.normal, f.exclude)):
                plural = role != "normal"
                for p in phrases:
                    body = phrase_pattern(p, plural=plural)
                    if (k, role) not in owners.setdefault(body, []):
                        owners[body].append((k, role))
                    gates[body] = first_words(p, plural=plural)
        self._patterns: list[tuple[list[tuple[int, str]], re.Pattern[str]]] = []
        self._by_word: dict[str, list[int]] = defaultdict(list)
        self._by_substring: dict[str, list[int]] = defaultdict(list)
        self._always: list[int] = []
        for body in sorted(owners, key=len, reverse=True):
            index = len(self._patterns)
            self._patterns.append((owners[body], re.compile(body + _END)))
            words = gates[body]
            anchors = None if words else required_substrings(body)
            if words:
                for w in words:
                    self._by_word[w].append(index)
            elif anchors is None:
                self._always.append(index)
            else:
                for a in anchors:
                    self._by_substring[a].append(index)
        self._words = frozenset(self._by_word)
        self._substrings = list(self._by_substring)

    def find(self, low: str, words: set[str]) -> dict[tuple[int, str], list[tuple[int, int]]]:
        """Spans per (finding index, role); ``words`` is ``words_of(low)``."""
        active = set(self._always)
        for w in self._words & words:
            active.update(self._by_word[w])
        for a in [a for a in self._substrings if a in low]:
            active.update(self._by_substring[a])
        hits: dict[tuple[int, str], list[tuple[int, int]]] = {}
        for index in active:
            keys, pattern = self._patterns[index]
            for m in pattern.finditer(low):
                s = m.start()
                if s == 0 or not low[s - 1].isalnum():
                    for key in keys:
                        hits.setdefault(key, []).append((s, m.end()))
        for key, spans in hits.items():
            if len(spans) > 1:
                hits[key] = _longest_without_overlap(spans)
        return hits


def _longest_without_overlap(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    spans.sort(key=lambda sp: (sp[0], -sp[1]))
    kept = [spans[0]]
    for sp in spans[1:]:
        if sp[0] >= kept[-1][1]:
            kept.append(sp)
    return kept
