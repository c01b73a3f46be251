"""The reporting radiologist: what a reader concludes from the drawn truth.

A reader sees obvious lesions, hedges on subtle ones, misses some of the
faintest, and now and then hedges on something that is not there (a nipple
shadow, a borderline heart). The conclusion per finding is a ``Reading``; the
label written to the manifest follows from it by one rule:

=============  =====  ===========================================================
reading        label  report text
=============  =====  ===========================================================
``present``    1      stated as present ("Small right pleural effusion.")
``uncertain``  -1     hedged ("Possible small nodule in the right upper zone.")
``absent``     0      negated ("No pneumothorax.") or not mentioned
=============  =====  ===========================================================

The pixel truth is kept apart (``meta_true_<finding>`` columns), so a hedge on a
real lesion, a hedge on nothing and a missed lesion are all visible to tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from greenfm.data.phantoms.course import Lesion

LABELS = {"present": 1, "uncertain": -1, "absent": 0}


@dataclass(frozen=True)
class Reading:
    """What the report says about one finding."""

    finding: str
    status: str
    """``present`` / ``uncertain`` / ``absent``."""
    lesions: tuple[Lesion, ...] = ()
    """What is described: the true lesions, or an imagined one for a hedge on nothing."""
    reason: str = ""
    """Why a hedge was made (``borderline``, ``projection``, ``mimic`` ...); empty otherwise."""
    mentioned: bool = field(default=False, compare=False)
    """Set by the report writer: whether the text states this finding at all."""

    @property
    def label(self) -> int:
        return LABELS[self.status]


def read_finding(
    rng: np.random.Generator,
    finding: str,
    lesions: list[Lesion],
    *,
    false_alarm: float = 0.02,
    hedge_bias: float = 0.0,
    mimic: Lesion | None = None,
) -> Reading:
    """One finding's reading from its true lesions (an empty list = absent).

    ``false_alarm`` is the chance of hedging on an absent finding (describing
    ``mimic``); ``hedge_bias`` adds to the chance of hedging on a present one
    (a bedside film, a rotated patient).
    """
    if not lesions:
        if mimic is not None and rng.random() < false_alarm:
            return Reading(finding, "uncertain", (mimic,), reason="mimic")
        return Reading(finding, "absent")
    c = max(lesion.conspicuity for lesion in lesions)
    p_miss = 0.45 * float(np.clip((0.22 - c) / 0.2, 0.0, 1.0))
    p_hedge = float(np.clip(0.03 + 0.5 * (0.55 - c) / 0.5 + hedge_bias, 0.03, 0.85))
    draw = rng.random()
    if draw < p_miss:
        return Reading(finding, "absent", reason="missed")
    if draw < p_miss + (1 - p_miss) * p_hedge:
        return Reading(finding, "uncertain", tuple(lesions), reason="subtle")
    return Reading(finding, "present", tuple(lesions))


def change_since(prior: Reading | None, now: Reading) -> str:
    """How a finding changed between two readings of the same patient.

    ``new`` / ``stable`` / ``increased`` / ``decreased`` / ``resolved``, or empty
    when there is no prior or nothing to compare.
    """
    if prior is None:
        return ""
    before, after = prior.status == "present", now.status == "present"
    if after and not before and prior.status == "absent":
        return "new"
    if before and now.status == "absent" and now.reason != "missed":
        return "resolved"
    if before and after:
        a = max(lesion.size_mm for lesion in prior.lesions)
        b = max(lesion.size_mm for lesion in now.lesions)
        if b > 1.25 * a:
            return "increased"
        if b < 0.8 * a:
            return "decreased"
        return "stable"
    return ""
