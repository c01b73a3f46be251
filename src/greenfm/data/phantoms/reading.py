"""The reporting radiologist: what a reader concludes from the drawn truth.

Every drawn finding is visible (see ``cxr`` and ``ct``), so the reader states
what is drawn and negates what is not, except for a documented, configurable
*reader-error rate* ``reader_error`` (default ``DEFAULT_READER_ERROR``): per
image and finding, with that chance the reading is wrong. A wrong reading of a
drawn lesion is a miss (label 0) or, one time in three, a hedge (-1); a wrong
reading of an absent finding is a mimic (a nipple shadow, a borderline heart)
stated as present (1) or, one time in three, hedged (-1). The label written to
the manifest follows from the reading by one rule:

=============  =====  ===========================================================
reading        label  report text
=============  =====  ===========================================================
``present``    1      stated as present ("Small right pleural effusion.")
``uncertain``  -1     hedged ("Possible small nodule in the right upper zone.")
``absent``     0      negated ("No pneumothorax.") or not mentioned
=============  =====  ===========================================================

The pixel truth is kept apart (``meta_true_<finding>`` columns) and each wrong
reading is flagged (``meta_reader_error_<finding>``), so with ``reader_error=0``
the labels equal the pixel truth exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from greenfm.data.phantoms.course import Lesion

LABELS = {"present": 1, "uncertain": -1, "absent": 0}
DEFAULT_READER_ERROR = 0.03
"""Chance, per image and finding, that the report's label disagrees with the pixel truth."""
HEDGE_SHARE = 1 / 3
"""Share of reader errors that are hedges (label -1) rather than flips (0 <-> 1)."""


@dataclass(frozen=True)
class Reading:
    """What the report says about one finding."""

    finding: str
    status: str
    """``present`` / ``uncertain`` / ``absent``."""
    lesions: tuple[Lesion, ...] = ()
    """What is described: the true lesions, or an imagined one for a reader error on nothing."""
    reason: str = ""
    """Why a reading is wrong (``missed``, ``subtle``, ``mimic``, ``projection``); empty when it is right."""
    mentioned: bool = field(default=False, compare=False)
    """Set by the report writer: whether the text states this finding at all."""

    @property
    def label(self) -> int:
        return LABELS[self.status]

    @property
    def wrong(self) -> bool:
        """Whether this reading disagrees with the pixel truth (a reader error)."""
        return bool(self.reason)


def read_finding(
    rng: np.random.Generator,
    finding: str,
    lesions: list[Lesion],
    *,
    reader_error: float = DEFAULT_READER_ERROR,
    mimic: Lesion | None = None,
) -> Reading:
    """One finding's reading from its true lesions (an empty list = absent).

    With chance ``reader_error`` the reading is wrong: a drawn lesion is missed or
    hedged, an absent finding is reported (``mimic`` describes what was seen) or
    hedged. Two random numbers are drawn whatever happens, so the stream (and the
    images drawn after) do not depend on ``reader_error``.
    """
    wrong, hedge = rng.random() < reader_error, rng.random() < HEDGE_SHARE
    if not lesions:
        if wrong and mimic is not None:
            return Reading(finding, "uncertain" if hedge else "present", (mimic,), reason="mimic")
        return Reading(finding, "absent")
    if not wrong:
        return Reading(finding, "present", tuple(lesions))
    if hedge:
        return Reading(finding, "uncertain", tuple(lesions), reason="subtle")
    return Reading(finding, "absent", reason="missed")


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
