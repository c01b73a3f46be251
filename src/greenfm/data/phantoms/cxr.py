"""Chest-radiograph phantoms: a patient's studies from their disease course.

``plan_patient`` turns the presence of each finding per study (from
``course.sample_course``) into one drawable ``CxrStudy`` per study:
chronic findings keep their place and size (a nodule grows slowly, an enlarged
heart stays enlarged), acute ones come, change and go. ``describe_study`` lists
what a reader could see, with sizes and sides, for the report writer and the
``meta_*`` columns. Sizes and subtlety are drawn so that the data set holds
obvious cases and many subtle ones (3-5 mm or faint nodules, blunted costophrenic
angles, thin apical rims, borderline hearts).
"""

from __future__ import annotations

import numpy as np

from greenfm.data.phantoms.course import CXR_FINDINGS, Lesion, sample_course
from greenfm.data.phantoms.cxr_anatomy import (
    LEFT,
    RIGHT,
    SIDE_NAMES,
    ChestAnatomy,
    sample_anatomy,
    sample_point_in_lung,
    zone_of,
)
from greenfm.data.phantoms.cxr_draw import CxrStudy, render_cxr
from greenfm.data.phantoms.phrases_cxr import CXR_STYLE
from greenfm.data.phantoms.reading import Reading, read_finding
from greenfm.data.phantoms.reports import ReportContext, write_report
from greenfm.data.phantoms.sites import SiteProfile

__all__ = ["CXR_FINDING_IDS", "CxrStudy", "cxr_patient", "describe_study", "plan_patient", "render_cxr"]

CXR_FINDING_IDS = ("cardiomegaly", "pleural_effusion", "pneumothorax", "consolidation", "lung_nodule")
"""Manifest finding columns of the radiograph phantoms, in this order."""

Nodule = tuple[float, float, float, float]
Consolidation = tuple[float, float, float, float, bool]


def cxr_patient(
    rng: np.random.Generator, patient_id: str, n_studies: int, site: SiteProfile, size: int, *,
    unmentioned_missing: bool = False,
) -> list[tuple[dict, np.ndarray]]:
    """One patient's studies as (manifest row without ``path``, uint8 image) pairs.

    Finding columns hold the report's label (1 / 0 / -1); with ``unmentioned_missing``
    a finding the report never mentions is left empty instead of 0.
    """
    course = sample_course(rng, CXR_FINDINGS, n_studies, site)
    studies = plan_patient(rng, course, site)
    female = studies[0].anatomy.female
    age = int(np.clip(rng.normal(site.age_mean, 14), 18, 95))
    day, gap, prior, out = 0, 0, None, []
    for t, study in enumerate(studies):
        truth = describe_study(study)
        readings = read_study(rng, study, truth)
        remarks = ("Low lung volumes.",) if study.dome_shift < -10 and rng.random() < 0.6 else ()
        context = ReportContext(portable=study.portable, device=study.device,
                                prior_days=None if t == 0 else gap, remarks=remarks)
        report, readings = write_report(rng, readings, CXR_STYLE, context, prior)
        study_id = f"{patient_id}-s{t + 1}"
        row = {"patient_id": patient_id, "study_id": study_id, "id": f"{study_id}-{'ap' if study.portable else 'pa'}",
               "report": report}
        for name, reading in readings.items():
            row[name] = None if unmentioned_missing and not reading.mentioned else reading.label
        row.update({"meta_site": site.name, "meta_view": "AP" if study.portable else "PA",
                    "meta_sex": "F" if female else "M",
                    "meta_age": age, "meta_study_index": t + 1, "meta_day": day, "meta_device": int(study.device),
                    "meta_ctr": round(study.ctr, 3)})
        for name in CXR_FINDING_IDS:
            lesions = truth[name]
            row[f"meta_true_{name}"] = int(bool(lesions))
            row[f"meta_size_{name}"] = max((lesion.size_mm for lesion in lesions), default=None)
            row[f"meta_conspicuity_{name}"] = max((round(lesion.conspicuity, 3) for lesion in lesions), default=None)
        out.append((row, render_cxr(study, site, size)))
        prior = readings
        gap = int(np.ceil(rng.exponential(45.0)))
        day += gap
    return out


def read_study(rng: np.random.Generator, study: CxrStudy, truth: dict[str, list[Lesion]]) -> dict[str, Reading]:
    """The reporting radiologist's conclusion per finding, with realistic hedges and misses."""
    side = lambda: "right" if rng.random() < 0.5 else "left"  # noqa: E731
    zone = lambda: str(rng.choice(["upper", "mid", "lower"]))  # noqa: E731
    borderline = 0.47 < study.ctr <= 0.5
    mimics = {
        "cardiomegaly": (Lesion("cardiomegaly", grade="mild", size_mm=study.ctr),
                         (0.3 if borderline else 0.01) + (0.12 if study.portable else 0.0)),
        "pleural_effusion": (Lesion("pleural_effusion", side=side(), grade="trace", size_mm=6.0),
                             0.04 if study.portable else 0.02),
        "pneumothorax": (Lesion("pneumothorax", side=side(), grade="small", size_mm=5.0),
                         0.04 if study.device else 0.01),
        "consolidation": (Lesion("consolidation", side=side(), zone="lower", grade="patchy", size_mm=20.0), 0.03),
        "lung_nodule": (Lesion("lung_nodule", side=side(), zone=zone(), grade="faint", size_mm=5.0), 0.03),
    }
    readings = {}
    for name in CXR_FINDING_IDS:
        mimic, false_alarm = mimics[name]
        bias = 0.25 if name == "cardiomegaly" and study.portable else 0.0
        reading = read_finding(rng, name, truth[name], false_alarm=false_alarm, hedge_bias=bias, mimic=mimic)
        if name == "cardiomegaly" and study.portable and reading.status == "uncertain" and rng.random() < 0.6:
            reading = Reading(name, "uncertain", reading.lesions, reason="projection")
        readings[name] = reading
    return readings


def plan_patient(rng: np.random.Generator, course: np.ndarray, site: SiteProfile) -> list[CxrStudy]:
    """One ``CxrStudy`` per row of ``course`` (presence per study; columns as ``CXR_FINDINGS``)."""
    col = {spec.name: k for k, spec in enumerate(CXR_FINDINGS)}
    anatomy = sample_anatomy(rng)
    enlarged_ctr = 0.5 + float(np.clip(rng.exponential(0.035), 0.005, 0.17))  # mostly mild
    nodules = [_sample_nodule(rng, anatomy) for _ in range(1 + int(rng.random() < 0.2))]
    studies: list[CxrStudy] = []
    effusions: tuple[tuple[int, float], ...] = ()
    pneumothorax: tuple[int, float] | None = None
    for t, row in enumerate(course):
        effusions = _next_effusions(rng, effusions) if row[col["pleural_effusion"]] else ()
        pneumothorax = _next_pneumothorax(rng, pneumothorax) if row[col["pneumothorax"]] else None
        consolidations: tuple[Consolidation, ...] = ()
        if row[col["consolidation"]]:
            consolidations = tuple(_sample_consolidation(rng, anatomy) for _ in range(1 + int(rng.random() < 0.25)))
        grown = tuple((x, y, d * (1.0 + 0.04 * t), c) for x, y, d, c in nodules)
        ctr = enlarged_ctr if row[col["cardiomegaly"]] else anatomy.ctr
        studies.append(
            CxrStudy(
                anatomy=anatomy,
                ctr=float(ctr + rng.normal(0, 0.005)),
                dome_shift=float(rng.normal(0, 7)),
                portable=bool(rng.random() < site.portable_fraction),
                device=bool(rng.random() < site.device_fraction),
                effusions=effusions,
                pneumothorax=pneumothorax,
                consolidations=consolidations,
                nodules=grown if row[col["lung_nodule"]] else (),
                seed=int(rng.integers(2**63)),
            )
        )
    return studies


def describe_study(study: CxrStudy) -> dict[str, list[Lesion]]:
    """The lesions of a study by finding id (an empty list = absent)."""
    an = study.anatomy
    out: dict[str, list[Lesion]] = {name: [] for name in CXR_FINDING_IDS}
    if study.ctr > 0.5:
        grade = "mild" if study.ctr < 0.55 else "moderate" if study.ctr < 0.6 else "marked"
        subtle = float(np.clip((study.ctr - 0.5) / 0.06, 0.05, 1.0))
        out["cardiomegaly"].append(Lesion("cardiomegaly", grade=grade, size_mm=round(study.ctr, 3), conspicuity=subtle))
    sides = {side for side, _ in study.effusions}
    for side, depth in study.effusions:
        grade = "trace" if depth < 12 else "small" if depth < 40 else "moderate" if depth < 85 else "large"
        out["pleural_effusion"].append(Lesion(
            "pleural_effusion", side="bilateral" if len(sides) == 2 else SIDE_NAMES[side], zone="basal",
            grade=grade, size_mm=round(depth, 1), conspicuity=float(np.clip(depth / 35, 0.05, 1.0))))
    if study.pneumothorax is not None:
        side, rim = study.pneumothorax
        grade = "small" if rim < 20 else "moderate" if rim < 40 else "large"
        out["pneumothorax"].append(Lesion("pneumothorax", side=SIDE_NAMES[side], zone="apical", grade=grade,
                                          size_mm=round(rim, 1), conspicuity=float(np.clip(rim / 22, 0.08, 1.0))))
    for x, y, radius, strength, bronchograms in study.consolidations:
        out["consolidation"].append(Lesion(
            "consolidation", side=SIDE_NAMES[RIGHT if x < 0 else LEFT], zone=zone_of(an, y),
            grade="patchy" if strength < 0.55 else "dense", size_mm=round(2 * radius, 1),
            conspicuity=float(np.clip(strength * radius / 28, 0.05, 1.0)),
            detail="air bronchograms" if bronchograms else ""))
    for x, y, diameter, contrast in study.nodules:
        out["lung_nodule"].append(Lesion(
            "lung_nodule", side=SIDE_NAMES[RIGHT if x < 0 else LEFT], zone=zone_of(an, y),
            grade="faint" if contrast < 0.5 else "solid", size_mm=round(diameter, 1),
            conspicuity=float(np.clip((diameter - 2.0) / 8.0 * (0.4 + contrast), 0.03, 1.0))))
    return out


def _sample_nodule(rng: np.random.Generator, an: ChestAnatomy) -> Nodule:
    x, y = sample_point_in_lung(rng, an, basal_bias=-0.5)
    diameter = float(np.exp(rng.uniform(np.log(3.0), np.log(12.0))))
    # Contrast: the share of the sphere's path that is solid (lung itself is 0.2); part-solid ones are faint.
    contrast = float(rng.uniform(0.3, 0.55) if rng.random() < 0.3 else rng.uniform(0.8, 1.1))
    return x, y, diameter, contrast


def _sample_consolidation(rng: np.random.Generator, an: ChestAnatomy) -> Consolidation:
    x, y = sample_point_in_lung(rng, an, basal_bias=1.0, depth_mm=12.0)
    strength = float(rng.uniform(0.35, 0.95))
    return x, y, float(rng.uniform(12, 50)), strength, bool(strength > 0.6 and rng.random() < 0.6)


def _next_effusions(rng: np.random.Generator, prev: tuple[tuple[int, float], ...]) -> tuple[tuple[int, float], ...]:
    if prev and rng.random() < 0.8:  # the same effusion, grown or shrunk
        return tuple((side, float(np.clip(d * rng.uniform(0.6, 1.5), 4, 140))) for side, d in prev)
    depth = lambda: float(np.clip(np.exp(rng.normal(np.log(32), 0.8)), 4, 140))  # noqa: E731
    if rng.random() < 0.3:
        return ((RIGHT, depth()), (LEFT, depth()))
    return ((RIGHT if rng.random() < 0.55 else LEFT, depth()),)


def _next_pneumothorax(rng: np.random.Generator, prev: tuple[int, float] | None) -> tuple[int, float]:
    if prev is not None and rng.random() < 0.7:
        return prev[0], float(np.clip(prev[1] * rng.uniform(0.4, 1.2), 3, 70))
    side = RIGHT if rng.random() < 0.5 else LEFT
    return side, float(np.clip(np.exp(rng.normal(np.log(16), 0.7)), 3, 70))
