"""Prompt families for zero-shot classification: one positive and one negative text per finding.

A family is a pair of templates; ``{p}`` is the finding's name in lower case with
``_`` replaced by a space (``Pleural_Effusion`` -> ``pleural effusion``). The
families are those of METHODS.md 3.8 (GreenRFM and its predecessors) and 4.5
(CheXficient). Store the family id and the rendered prompts with every result:
zero-shot numbers are only comparable under the same prompts.
"""

from __future__ import annotations

from collections.abc import Sequence

from greenfm.errors import ConfigError

# id -> (positive template, negative template)
PROMPT_FAMILIES: dict[str, tuple[str, str]] = {
    "p1": ("{p}.", "not {p}."),
    "p2": ("{p}.", ""),  # an empty negative prompt: the text tower's embedding of ""
    "p3": ("There is {p}.", "There is no {p}."),
    "p4": ("{p} is present.", "{p} is not present."),
    "p5": ("Findings are compatible with {p}.", "Findings are not compatible with {p}."),
    "chexficient": ("{p}", "no {p}"),
}
DEFAULT_PROMPT_FAMILY = "p3"


def finding_phrase(finding: str) -> str:
    """The finding as it appears in a prompt: lower case, ``_`` as spaces (``Lung_Opacity`` -> ``lung opacity``)."""
    return finding.replace("_", " ").lower()


def prompt_family(family: str) -> tuple[str, str]:
    """The (positive, negative) templates of ``family``; an unknown id lists the valid ones."""
    if family not in PROMPT_FAMILIES:
        raise ConfigError(f"unknown prompt family {family!r}; choose one of {', '.join(PROMPT_FAMILIES)}")
    return PROMPT_FAMILIES[family]


def prompt_pairs(findings: Sequence[str], family: str = DEFAULT_PROMPT_FAMILY) -> list[tuple[str, str]]:
    """One (positive, negative) prompt per finding, in the order given."""
    positive, negative = prompt_family(family)
    return [(positive.format(p=finding_phrase(f)), negative.format(p=finding_phrase(f))) for f in findings]
