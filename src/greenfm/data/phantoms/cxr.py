"""Chest-radiograph phantoms: a patient's studies from their disease course.

``plan_patient`` turns the presence of each finding per study (from
``course.sample_course``) into one drawable ``CxrStudy`` per study:
chronic findings keep their place and size (a nodule grows slowly, an enlarged
heart stays enlarged), acute ones come, change and go. ``describe_study`` lists
what is drawn, with sizes, contrasts and sides, for the reader, the report
writer and the pixel-truth ``meta_*`` columns.

Every drawn finding is visible at 64 px and graded in size and contrast (the
ranges below; ``meta_size_<finding>`` and ``meta_contrast_<finding>`` hold the
values of each image, ``meta_pixel_mm`` its pixel size, about 5.6 mm at 64 px
on site A):

==================  ==========================================  =====================================
finding             appearance                                  size / contrast
==================  ==========================================  =====================================
cardiomegaly        a wider cardiac silhouette                  CTR 0.53-0.68 (normal hearts <= 0.48);
                                                                contrast: CTR - 0.5
pleural_effusion    basal fluid: a dense band with a meniscus,  fluid depth 25-120 mm; contrast: share
                    blunting the costophrenic angle (erect);    of basal air replaced, 0.75-1.0
                    a veil densest at the base (supine, AP)
pneumothorax        a lucent apical and lateral rim without     rim 20-60 mm; contrast: share of lung
                    lung markings, a pleural line inside it;    tissue gone, 0.7-1.0
                    basal and lateral when supine (AP)
consolidation       a fluffy opacity, air bronchograms if dense diameter 36-90 mm; contrast: share of
                                                                alveolar air replaced, 0.6-1.0
lung_nodule         a round dense spot: a sphere's projection   diameter 20-30 mm when first seen,
                    (flat-topped disc, sharp edge), at least    growing 4% per study (about 3.5 px
                    20 mm inside the lung                       or more at 64 px); contrast: density
                                                                relative to water, 2.0-4.0
==================  ==========================================  =====================================
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
from greenfm.data.phantoms.reading import DEFAULT_READER_ERROR, Reading, read_finding
from greenfm.data.phantoms.reports import ReportContext, write_report
from greenfm.data.phantoms.sites import SiteProfile

__all__ = ["CXR_FINDING_IDS", "CxrStudy", "cxr_patient", "describe_study", "plan_patient", "render_cxr"]

CXR_FINDING_IDS = ("cardiomegaly", "pleural_effusion", "pneumothorax", "consolidation", "lung_nodule")
"""Manifest finding columns of the radiograph phantoms, in this order."""

Nodule = tuple[float, float, float, float]
Consolidation = tuple[float, float, float, float, bool]


def cxr_patient(
    rng: np.random.Generator, patient_id: str, n_studies: int, site: SiteProfile, size: int, *,
    unmentioned_missing: bool = False, reader_error: float = DEFAULT_READER_ERROR,
) -> list[tuple[dict, np.ndarray]]:
    """One patient's studies as (manifest row without ``path``, uint8 image) pairs.

    Finding columns hold the report's label (1 / 0 / -1), which equals the pixel truth
    except for reader errors (chance ``reader_error`` per finding, see ``reading``);
    with ``unmentioned_missing`` a finding the report never mentions is left empty
    instead of 0.
    """
    course = sample_course(rng, CXR_FINDINGS, n_studies, site)
    studies = plan_patient(rng, course, site)
    female = studies[0].anatomy.female
    age = int(np.clip(rng.normal(site.age_mean, 14), 18, 95))
    day, gap, prior, out = 0, 0, None, []
    for t, study in enumerate(studies):
        truth = describe_study(study)
        readings = read_study(rng, study, truth, reader_error)
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
                    "meta_ctr": round(study.ctr, 3),
                    "meta_pixel_mm": round(site.field_of_view_mm * study.zoom / size, 3)})
        errors = 0
        for name in CXR_FINDING_IDS:
            lesions = truth[name]
            row[f"meta_true_{name}"] = int(bool(lesions))
            row[f"meta_size_{name}"] = max((lesion.size_mm for lesion in lesions), default=None)
            row[f"meta_contrast_{name}"] = max((round(lesion.contrast, 3) for lesion in lesions), default=None)
            row[f"meta_reader_error_{name}"] = int(readings[name].wrong)
            errors += int(readings[name].wrong)
        row["meta_reader_error"] = errors
        out.append((row, render_cxr(study, site, size)))
        prior = readings
        gap = int(np.ceil(rng.exponential(45.0)))
        day += gap
    return out


def read_study(rng: np.random.Generator, study: CxrStudy, truth: dict[str, list[Lesion]],
               reader_error: float = DEFAULT_READER_ERROR) -> dict[str, Reading]:
    """The reporting radiologist's conclusion per finding: the truth, up to ``reader_error``."""
    side = "right" if rng.random() < 0.5 else "left"
    zone = str(rng.choice(["upper", "mid", "lower"]))
    mimics = {
        "cardiomegaly": Lesion("cardiomegaly", grade="mild", size_mm=round(study.ctr, 3)),
        "pleural_effusion": Lesion("pleural_effusion", side=side, grade="small", size_mm=25.0),
        "pneumothorax": Lesion("pneumothorax", side=side, grade="small", size_mm=20.0),
        "consolidation": Lesion("consolidation", side=side, zone="lower", grade="patchy", size_mm=30.0),
        "lung_nodule": Lesion("lung_nodule", side=side, zone=zone, grade="faint", size_mm=15.0),
    }
    readings = {}
    for name in CXR_FINDING_IDS:
        reading = read_finding(rng, name, truth[name], reader_error=reader_error, mimic=mimics[name])
        if name == "cardiomegaly" and study.portable and reading.status == "uncertain":
            reading = Reading(name, "uncertain", reading.lesions, reason="projection")
        readings[name] = reading
    return readings


def plan_patient(rng: np.random.Generator, course: np.ndarray, site: SiteProfile) -> list[CxrStudy]:
    """One ``CxrStudy`` per row of ``course`` (presence per study; columns as ``CXR_FINDINGS``)."""
    col = {spec.name: k for k, spec in enumerate(CXR_FINDINGS)}
    anatomy = sample_anatomy(rng)
    enlarged_ctr = float(rng.uniform(0.53, 0.68))
    nodules = [_sample_nodule(rng, anatomy) for _ in range(1 + int(rng.random() < 0.35))]
    studies: list[CxrStudy] = []
    effusions: tuple[tuple[int, float, float], ...] = ()
    pneumothorax: tuple[int, float, float] | None = None
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
                zoom=float(np.exp(rng.normal(0, 0.06))),
                seed=int(rng.integers(2**63)),
            )
        )
    return studies


def describe_study(study: CxrStudy) -> dict[str, list[Lesion]]:
    """The lesions of a study by finding id (an empty list = absent).

    ``Lesion.size_mm`` is the finding's size and ``Lesion.contrast`` its contrast
    (the ``meta_size_*`` and ``meta_contrast_*`` columns; see the table above).
    """
    an = study.anatomy
    out: dict[str, list[Lesion]] = {name: [] for name in CXR_FINDING_IDS}
    if study.ctr > 0.5:
        grade = "mild" if study.ctr < 0.57 else "moderate" if study.ctr < 0.63 else "marked"
        out["cardiomegaly"].append(Lesion("cardiomegaly", grade=grade, size_mm=round(study.ctr, 3),
                                          contrast=round(study.ctr - 0.5, 3)))
    sides = {side for side, _, _ in study.effusions}
    for side, depth, fraction in study.effusions:
        grade = "small" if depth < 40 else "moderate" if depth < 80 else "large"
        out["pleural_effusion"].append(Lesion(
            "pleural_effusion", side="bilateral" if len(sides) == 2 else SIDE_NAMES[side], zone="basal",
            grade=grade, size_mm=round(depth, 1), contrast=fraction))
    if study.pneumothorax is not None:
        side, rim, fraction = study.pneumothorax
        grade = "small" if rim < 25 else "moderate" if rim < 40 else "large"
        out["pneumothorax"].append(Lesion("pneumothorax", side=SIDE_NAMES[side], zone="apical", grade=grade,
                                          size_mm=round(rim, 1), contrast=fraction))
    for x, y, radius, strength, bronchograms in study.consolidations:
        out["consolidation"].append(Lesion(
            "consolidation", side=SIDE_NAMES[RIGHT if x < 0 else LEFT], zone=zone_of(an, y),
            grade="patchy" if strength < 0.75 else "dense", size_mm=round(2 * radius, 1), contrast=strength,
            detail="air bronchograms" if bronchograms else ""))
    for x, y, diameter, contrast in study.nodules:
        out["lung_nodule"].append(Lesion(
            "lung_nodule", side=SIDE_NAMES[RIGHT if x < 0 else LEFT], zone=zone_of(an, y),
            grade="faint" if contrast < 2.5 else "solid", size_mm=round(diameter, 1), contrast=contrast))
    return out


def _sample_nodule(rng: np.random.Generator, an: ChestAnatomy) -> Nodule:
    # 20-30 mm (a nodule is under 30 mm; larger is a mass) and 20 mm inside the lung: at 64 px
    # (5.6 mm pixels) 15-20 mm nodules near the chest wall were lost among rib crossings and vessel
    # ends (a matched filter scored 0.48 AUROC on them; BENCHMARKS.md, "Phantom learnability").
    x, y = sample_point_in_lung(rng, an, basal_bias=-0.5, depth_mm=20.0)
    diameter = float(np.exp(rng.uniform(np.log(20.0), np.log(30.0))))
    # Contrast: density relative to water along the sphere's path (aerated lung is 0.2; calcified
    # nodules reach 3 or more): even the faintest smallest one adds over a rib's thickness at 64 px.
    contrast = round(float(rng.uniform(2.0, 4.0)), 3)
    return x, y, diameter, contrast


def _sample_consolidation(rng: np.random.Generator, an: ChestAnatomy) -> Consolidation:
    x, y = sample_point_in_lung(rng, an, basal_bias=1.0, depth_mm=15.0)
    strength = round(float(rng.uniform(0.6, 1.0)), 3)
    return x, y, float(rng.uniform(18, 45)), strength, bool(strength > 0.75 and rng.random() < 0.6)


def _next_effusions(rng: np.random.Generator, prev: tuple[tuple[int, float, float], ...]
                    ) -> tuple[tuple[int, float, float], ...]:
    """(side, fluid depth mm, share of basal air replaced) per effusion."""
    if prev and rng.random() < 0.8:  # the same effusion, grown or shrunk
        return tuple((side, float(np.clip(d * rng.uniform(0.7, 1.4), 25, 120)), f) for side, d, f in prev)
    depth = lambda: float(np.exp(rng.uniform(np.log(25.0), np.log(120.0))))  # noqa: E731
    fraction = round(float(rng.uniform(0.75, 1.0)), 3)
    if rng.random() < 0.3:
        return ((RIGHT, depth(), fraction), (LEFT, depth(), fraction))
    return ((RIGHT if rng.random() < 0.55 else LEFT, depth(), fraction),)


def _next_pneumothorax(rng: np.random.Generator, prev: tuple[int, float, float] | None) -> tuple[int, float, float]:
    """(side, rim width mm, share of lung tissue and markings gone from the rim)."""
    if prev is not None and rng.random() < 0.7:
        return prev[0], float(np.clip(prev[1] * rng.uniform(0.6, 1.2), 20, 60)), prev[2]
    side = RIGHT if rng.random() < 0.5 else LEFT
    return side, float(np.exp(rng.uniform(np.log(20.0), np.log(60.0)))), round(float(rng.uniform(0.7, 1.0)), 3)
