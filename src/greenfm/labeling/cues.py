"""Negation, uncertainty and scope cues for the rule labeler, as data.

Each cue has a kind:

- ``neg_pre`` / ``unc_pre``: scope runs forward ("no effusion", "possible effusion");
- ``neg_post`` / ``unc_post``: scope runs backward ("effusion is not seen",
  "effusion cannot be excluded");
- ``neg_both``: either way ("resolved effusion", "effusion resolved");
- ``unc_both``: a short scope either way ("?pneumonia", "pneumonia?");
- ``pseudo``: looks like a cue but is not one ("no change in", "gram negative");
  it is consumed so its words cannot fire, and it ends an earlier scope;
- ``term``: ends any scope ("but", "however", "which", ", a large ...").

Phrases are matched on lower-cased text, any whitespace between words. At one
position the longest phrase wins, so "not excluded" (uncertain) beats "not"
(negation) and "no change" (pseudo) beats "no".
"""

from __future__ import annotations

import re

from greenfm.labeling.text import words_of

NEG_PRE = (
    "no", "not", "without", "free of", "negative for", "no evidence of", "no signs of", "no sign of",
    "no findings of", "no radiographic evidence of", "without evidence of", "absence of", "absent", "neither",
    "nor", "never", "lack of", "resolution of", "interval resolution of", "clear of",
    "rules out", "removal of", "interval removal of", "no longer", "fails to demonstrate", "fails to show",
    "denies",
)
NEG_POST = (
    "is not seen", "are not seen", "was not seen", "were not seen", "not seen", "none seen",
    "not identified", "is not identified", "are not identified", "not visualized", "not appreciated",
    "not demonstrated", "not present", "is not present", "are not present", "not evident", "is not evident",
    "is absent", "are absent", "has resolved", "have resolved", "had resolved", "has cleared",
    "have cleared", "has been removed", "have been removed", "was removed", "were removed",
    "removed", "was ruled out", "has been excluded", "was excluded",
    "is excluded", "is no longer seen", "are no longer seen", "no longer seen", "is no longer present",
    "no longer present", "is no longer visualized", "no longer visualized", "no longer visible",
    "is no longer evident", "is negative", "re::\\s*(?:none|negative|absent|no)(?=\\s*(?:[.;,]|$))",
)
UNC_PRE = (
    "possible", "possibly", "probable", "probably", "may", "might", "could", "cannot exclude",
    "can not exclude", "can't exclude", "cannot rule out", "can not rule out", "can't rule out",
    "rule out", "r/o", "to exclude", "to rule out", "evaluate for", "evaluation for", "eval for",
    "assess for", "assessment for", "concern for", "concerning for", "suspicious for", "suspicion for",
    "suspicion of", "suspect", "suspected", "suggest", "suggests", "suggested", "suggesting",
    "suggestive of", "likely", "most likely", "unlikely", "questionable", "question of", "equivocal",
    "indeterminate", "borderline", "versus", "vs", "vs.", "differential diagnosis includes",
    "differential includes", "differential considerations include", "consider", "considered",
    "presumed", "presumably", "potential", "potentially", "raise the possibility of",
    "raises the possibility of", "raising the possibility of", "possibility of", "thought to represent",
    "worrisome for", "raise suspicion for", "should raise suspicion for", "uncertain", "ambiguous",
    "difficult to exclude",
)
UNC_POST = (
    "is likely", "are likely", "is possible", "are possible", "is probable", "is suspected",
    "are suspected", "was suspected", "were suspected", "is questionable", "is questioned",
    "is equivocal", "is unlikely", "are unlikely", "is uncertain", "is not excluded", "are not excluded",
    "not excluded", "not entirely excluded", "not completely excluded", "not ruled out",
    "is not ruled out", "cannot be excluded", "can not be excluded", "could not be excluded",
    "cannot be entirely excluded", "cannot be completely excluded", "cannot be ruled out",
    "can not be ruled out", "could not be ruled out", "is difficult to exclude",
    "would be difficult to exclude", "not well seen", "not well visualized", "not clearly seen",
    "is a consideration", "are a consideration", "is considered", "are considered",
)
NEG_BOTH = ("resolved", "ruled out")
UNC_BOTH = ("re:\\?",)
PSEUDO = (
    "no change", "no significant change", "no interval change", "no substantial change",
    "no definite change", "no appreciable change", "no increase", "no significant increase",
    "no decrease", "without change", "without interval change", "not only", "gram negative",
    "not significantly changed", "not changed", "no further", "not necessarily",
)
_PRESENT = (
    "(?=(?:small|moderate|large|mild|severe|massive|trace|tiny|new|increasing|increased|worsening|worsened"
    "|persistent|stable|unchanged|extensive|improving|improved|residual|marked|moderate-sized|large-sized"
    "|small-sized|enlarged)(?![a-z]))"
)
# Scope ends at these words, and at a comma or "and" that starts a new positive
# statement: "no effusion, a large pneumothorax"; "no effusion and small pneumothorax".
TERM = (
    "but", "however", "although", "though", "yet", "except", "except for", "apart from", "aside from",
    "other than", "with the exception of", "which", "who", "whereas", "while", "and there is",
    "and there are", "there is", "there are", "otherwise",
    "re:,\\s*(?:(?:a|an|the)\\s+)?" + _PRESENT,
    "re:and\\s+(?:(?:a|an|the)\\s+)?" + _PRESENT,
)

PRE_KINDS = frozenset({"neg_pre", "unc_pre", "neg_both", "unc_both"})
POST_KINDS = frozenset({"neg_post", "unc_post", "neg_both", "unc_both"})
NEG_KINDS = frozenset({"neg_pre", "neg_post", "neg_both"})
UNC_KINDS = frozenset({"unc_pre", "unc_post", "unc_both"})


class CueMatcher:
    """Finds cues in lower-cased text, leftmost and longest first, without overlaps.

    Phrases are grouped by their first word; a group's regex runs only when
    that word occurs in the text, and starts with it so that the regex engine
    can skip ahead quickly (a single regex over all ~200 phrases was 50x slower).
    """

    def __init__(self) -> None:
        groups: dict[str, list[str]] = {}
        self._kind: dict[str, str] = {}
        self._raw: list[tuple[str, re.Pattern[str]]] = []
        for kind, phrases in (
            ("pseudo", PSEUDO), ("neg_pre", NEG_PRE), ("neg_post", NEG_POST), ("neg_both", NEG_BOTH),
            ("unc_pre", UNC_PRE), ("unc_post", UNC_POST), ("unc_both", UNC_BOTH), ("term", TERM),
        ):
            for phrase in phrases:
                if phrase.startswith("re:"):
                    self._raw.append((kind, re.compile(phrase[3:])))
                    continue
                words = phrase.lower().split()
                self._kind[" ".join(words)] = kind
                groups.setdefault(words[0], []).append("".join(r"\s+" + re.escape(w) for w in words[1:]))
        self._by_word: dict[str, re.Pattern[str]] = {}
        self._by_substring: dict[str, re.Pattern[str]] = {}  # first words that are not plain words ("r/o")
        for first, rests in groups.items():
            rests.sort(key=len, reverse=True)
            end = r"(?![a-z0-9])" if first[-1].isalnum() else ""
            body = re.escape(first) + "(?:" + "|".join(r + (r"(?![a-z0-9])" if r else end) for r in rests) + ")"
            plain = first.isalnum()
            (self._by_word if plain else self._by_substring)[first] = re.compile(body)
        self._first_words = frozenset(self._by_word)

    def find(self, low: str, words: set[str] | None = None) -> list[tuple[int, int, str]]:
        """(start, end, kind) of every cue in ``low``, sorted by start."""
        words = words_of(low) if words is None else words
        found: list[tuple[int, int, str]] = []
        for kind, pattern in self._raw:
            for m in pattern.finditer(low):
                s = m.start()
                if s == 0 or not (low[s].isalnum() and low[s - 1].isalnum()):
                    found.append((s, m.end(), kind))
        patterns = [self._by_word[w] for w in self._first_words & words]
        patterns += [p for w, p in self._by_substring.items() if w in low]
        for pattern in patterns:
            for m in pattern.finditer(low):
                s = m.start()
                if s > 0 and low[s].isalnum() and low[s - 1].isalnum():
                    continue
                found.append((s, m.end(), self._kind[" ".join(m.group().split())]))
        found.sort(key=lambda c: (c[0], -c[1]))
        merged: list[tuple[int, int, str]] = []
        for cue in found:
            if not merged or cue[0] >= merged[-1][1]:
                merged.append(cue)
        return merged
