"""Free-text reports for the phantoms, written the way radiologists write them.

A report is composed from the readings of one study (``reading``) and a
``ReportStyle`` phrase book (``phrases_cxr`` / ``phrases_ct``):
a layout drawn at random (headed sections, a findings paragraph, a one-line
report), findings in the usual reading order with varied phrasing, explicit
negations for some absent findings (often grouped: "No pleural effusion or
pneumothorax."), hedges for uncertain ones, change since the prior study, an
incidental remark or two (lines, bones, technique), and an impression that
repeats the positives or says the study is normal.

Template fields: ``{side}`` / ``{Side}`` (right, left, bilateral), ``{zone}``,
``{lobe}`` / ``{Lobe}``, ``{grade}`` / ``{Grade}``, ``{size}`` (mm), ``{cm}``, ``{s}`` (plural
ending for bilateral), ``{detail}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

import numpy as np

from greenfm.data.phantoms.course import Lesion
from greenfm.data.phantoms.reading import Reading, change_since


@dataclass(frozen=True)
class ReportStyle:
    """The phrase book of one modality."""

    titles: tuple[str, ...]
    portable_titles: tuple[str, ...]
    sections: tuple[tuple[str, tuple[str, ...]], ...]
    """(section heading, findings it covers), in reading order."""
    phrases: dict[str, dict[str, tuple[str, ...]]]
    """Per finding, templates by key: ``present``, ``uncertain``, ``uncertain_<reason>``, ``absent``,
    ``new``, ``stable``, ``increased``, ``decreased``, ``resolved``, ``impression``,
    ``impression_uncertain``."""
    grouped_negations: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]
    """Findings negated together in one sentence, with the sentences."""
    negation_rate: dict[str, float]
    """Chance that an absent finding is negated explicitly."""
    normal_impressions: tuple[str, ...]
    indications: dict[str, tuple[str, ...]]
    """Clinical questions, by the finding that prompts them (``default`` otherwise)."""
    incidental: tuple[str, ...]
    device: tuple[str, ...] = ()
    technique: tuple[str, ...] = ()
    portable_technique: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReportContext:
    """Facts about the study that the report may mention."""

    portable: bool = False
    device: bool = False
    prior_days: int | None = None
    """Days since the patient's previous study; ``None`` for the first."""
    remarks: tuple[str, ...] = ()
    """Technical remarks already phrased (rotation, low lung volumes)."""


@dataclass
class _Draft:
    rng: np.random.Generator
    lines: dict[str, list[str]] = field(default_factory=dict)
    mentioned: set[str] = field(default_factory=set)

    def pick(self, options: tuple[str, ...] | list[str]) -> str:
        return options[int(self.rng.integers(len(options)))]


def write_report(
    rng: np.random.Generator,
    readings: dict[str, Reading],
    style: ReportStyle,
    context: ReportContext,
    prior: dict[str, Reading] | None = None,
) -> tuple[str, dict[str, Reading]]:
    """The report text, and the readings with ``mentioned`` set."""
    draft = _Draft(rng)
    for heading, findings in style.sections:
        draft.lines[heading] = []
        for name in findings:
            if name in readings:
                _describe(draft, style, heading, readings[name], prior.get(name) if prior else None)
        _negate(draft, style, heading, findings, readings)
    if context.device and style.device:
        draft.lines[style.sections[0][0]].insert(0, draft.pick(style.device))
    extras = [draft.pick(style.incidental)] if rng.random() < 0.45 else []
    extras += list(context.remarks)
    impression = _impression(draft, style, readings, prior)
    mentioned = {k: replace(r, mentioned=k in draft.mentioned) for k, r in readings.items()}
    return _layout(draft, style, context, readings, extras, impression), mentioned


def _describe(draft: _Draft, style: ReportStyle, heading: str, reading: Reading, prior: Reading | None) -> None:
    book = style.phrases[reading.finding]
    change = change_since(prior, reading)
    if reading.status == "absent":
        if change == "resolved" and "resolved" in book and draft.rng.random() < 0.7:
            draft.lines[heading].append(_fill(draft.pick(book["resolved"]), prior.lesions[0]))
            draft.mentioned.add(reading.finding)
        return
    if reading.status == "uncertain":
        key = f"uncertain_{reading.reason}"
        options = book.get(key) or book["uncertain"]
    else:
        options = book.get(change) if change and draft.rng.random() < 0.75 else None
        options = options or book["present"]
    lesions = reading.lesions if reading.finding in ("lung_nodule", "consolidation") else reading.lesions[:1]
    for lesion in lesions[:2]:
        usable = [t for t in options if "{detail}" not in t or lesion.detail] or list(book["present"][:1])
        draft.lines[heading].append(_fill(draft.pick(usable), lesion))
    draft.mentioned.add(reading.finding)


def _negate(draft: _Draft, style: ReportStyle, heading: str, findings: tuple[str, ...],
            readings: dict[str, Reading]) -> None:
    """Explicit negations for absent findings of one section (grouped where a phrase exists)."""
    absent = [f for f in findings if f in readings and readings[f].status == "absent" and f not in draft.mentioned]
    for group, sentences in style.grouped_negations:
        if all(g in absent for g in group) and draft.rng.random() < 0.6:
            draft.lines[heading].append(draft.pick(sentences))
            draft.mentioned.update(group)
            absent = [f for f in absent if f not in group]
    for name in absent:
        if draft.rng.random() < style.negation_rate.get(name, 0.5):
            draft.lines[heading].append(draft.pick(style.phrases[name]["absent"]))
            draft.mentioned.add(name)


def _impression(draft: _Draft, style: ReportStyle, readings: dict[str, Reading],
                prior: dict[str, Reading] | None) -> list[str]:
    items = []
    for _, findings in style.sections:
        for name in findings:
            reading = readings.get(name)
            if reading is None or reading.status == "absent":
                continue
            book = style.phrases[name]
            key = "impression" if reading.status == "present" else "impression_uncertain"
            item = _fill(draft.pick(book[key]), reading.lesions[0])
            stable = change_since(prior.get(name) if prior else None, reading) == "stable"
            if reading.status == "present" and stable and ";" not in item:
                item = item.rstrip(".") + ", unchanged."
            items.append(item)
    if not items:
        return [draft.pick(style.normal_impressions)]
    if len(items) < 3 and draft.rng.random() < 0.3:
        items.append("Otherwise no acute cardiopulmonary abnormality.")
    return items


def _layout(draft: _Draft, style: ReportStyle, context: ReportContext, readings: dict[str, Reading],
            extras: list[str], impression: list[str]) -> str:
    rng = draft.rng
    body = [line for heading, _ in style.sections for line in draft.lines[heading]]
    title = draft.pick(style.portable_titles if context.portable else style.titles)
    comparison = "None." if context.prior_days is None else _comparison(rng, context.prior_days)
    numbered = len(impression) > 1 and rng.random() < 0.5
    impression_text = (
        "\n".join(f"{i}. {item}" for i, item in enumerate(impression, 1)) if numbered else " ".join(impression)
    )
    layout = rng.random()
    if layout < 0.4:  # fully headed
        parts = [f"EXAMINATION: {title}", f"INDICATION: {_indication(draft, style, readings)}"]
        technique = style.portable_technique if context.portable else style.technique
        if technique and rng.random() < 0.6:
            parts.append(f"TECHNIQUE: {draft.pick(technique)}")
        parts.append(f"COMPARISON: {comparison}")
        if len(style.sections) > 2 and rng.random() < 0.6:  # one line per organ system
            findings = "\n".join(
                f"{heading}: {' '.join(draft.lines[heading]) or 'Unremarkable.'}" for heading, _ in style.sections)
            findings += ("\n" + " ".join(extras)) if extras else ""
        else:
            findings = " ".join(body + extras)
        parts += ["", f"FINDINGS:\n{findings}", "", f"IMPRESSION:\n{impression_text}"]
        return "\n".join(parts)
    if layout < 0.8:  # findings and impression only
        lead = f"Comparison: {comparison} " if context.prior_days is not None and rng.random() < 0.6 else ""
        return f"FINDINGS: {lead}{' '.join(body + extras)}\n\nIMPRESSION: {impression_text}"
    # A short free paragraph, as some readers dictate.
    text = " ".join([f"{title}."] + body + extras)
    return f"{text}\nImpression: {' '.join(impression)}"


def _comparison(rng: np.random.Generator, days: int) -> str:
    when = f"{days} days" if days < 14 else f"{days // 7} weeks" if days < 90 else f"{days // 30} months"
    return str(rng.choice([f"Prior study from {when} earlier.", f"Study of {when} ago.",
                           f"Compared with the examination {when} prior."]))


def _indication(draft: _Draft, style: ReportStyle, readings: dict[str, Reading]) -> str:
    prompted = [name for name, r in readings.items() if r.status != "absent" and name in style.indications]
    if prompted and draft.rng.random() < 0.5:
        return draft.pick(style.indications[draft.pick(prompted)])
    return draft.pick(style.indications["default"])


def _fill(template: str, lesion: Lesion) -> str:
    side = lesion.side or "right"
    lobe = lesion.zone or "right lower lobe"
    text = template.format(
        side=side, Side=side.capitalize(), zone=lesion.zone or "lower", lobe=lobe, Lobe=lobe[:1].upper() + lobe[1:],
        grade=lesion.grade, Grade=lesion.grade.capitalize(), size=max(int(round(lesion.size_mm)), 1),
        cm=f"{lesion.size_mm / 10:.1f}", s="s" if side == "bilateral" else "", detail=lesion.detail,
    )
    text = " ".join(text.split()).replace(" ,", ",").replace(" .", ".")
    return re.sub(r"\b([Aa]) (?=(?:8\d?|11|18)\b)", r"\1n ", text)  # "an 8 mm nodule"
