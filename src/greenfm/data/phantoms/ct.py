"""Chest CT phantoms: a patient's volumes, reports and labels, and the NIfTI writer.

``ct_patient`` draws each study of one patient (``ct_draw``) with a report and
labels, like ``cxr.cxr_patient`` does for radiographs. Chronic findings
(emphysema, nodules, an enlarged heart) persist across a patient's volumes;
effusions and consolidation come and go. Volumes are written as int16 HU NIfTI
with an RAS+ affine and the 1.5 x 1.5 x 3 mm spacing, byte-identical for the same
seed (the gzip header carries no time stamp).

Sizes and contrasts (the
``meta_size_<finding>`` and ``meta_contrast_<finding>`` columns; contrast is the
HU difference from the tissue the finding replaces) are, for the default
96-voxel volume (the chest fills the field, so at other sizes every length below
scales by ``size / 96``, with nodules at least 3 voxels across (4.5 mm; a nodule
smaller than the grid can show is not drawn) and their sizes still spread 2x; at
small sizes the thinnest findings (pericardial fluid) fall below two voxels, as a
coarse scan would show them; the recorded sizes are mm of the volume written):

====================  ==================================  ==================================
finding               appearance                          size / contrast
====================  ==================================  ==================================
lung_nodule           a solid or ground-glass ball        diameter 6-20 mm; +885 HU (solid,
                                                          75%) or +300 HU (ground glass)
pleural_effusion      a dependent fluid crescent          depth 8-60 mm; +860 HU
consolidation         a fluffy dense region, bronchograms diameter 24-60 mm; +880 x strength
                                                          (strength 0.5-1.0)
pericardial_effusion  fluid around the heart              thickness 6-20 mm; +98 HU over fat
emphysema             low-attenuation holes, upper lobes  % of lung destroyed 8-35; -125 HU
cardiomegaly          a larger heart                      scale 1.2-1.5 (normal <= 1.1);
                                                          contrast: scale - 1
====================  ==================================  ==================================
"""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np

from greenfm.data.phantoms.course import CT_FINDINGS, Lesion, sample_course
from greenfm.data.phantoms.ct_draw import (
    SPACING_MM, CtAnatomy, CtStudy, lesion_scale, lung_mask, render_ct, sample_ct_anatomy,
)
from greenfm.data.phantoms.phrases_ct import CT_STYLE
from greenfm.data.phantoms.reading import DEFAULT_READER_ERROR, Reading, read_finding
from greenfm.data.phantoms.reports import ReportContext, write_report
from greenfm.data.phantoms.sites import SiteProfile

NODULE_MIN_VOXELS = 3
"""A nodule is drawn at least this many voxels across (as the radiographs' are about 3.5 px at 64 px)."""

CT_FINDING_IDS = ("lung_nodule", "pleural_effusion", "consolidation", "pericardial_effusion", "emphysema",
                  "cardiomegaly")
"""Manifest finding columns of the CT phantoms, in this order."""


def ct_patient(
    rng: np.random.Generator, patient_id: str, n_studies: int, site: SiteProfile, size: int, *,
    unmentioned_missing: bool = False, reader_error: float = DEFAULT_READER_ERROR,
) -> list[tuple[dict, np.ndarray, tuple[float, float, float]]]:
    """One patient's volumes as (manifest row without ``path``, (z, y, x) int16 HU volume, spacing) triples."""
    course = sample_course(rng, CT_FINDINGS, n_studies, site)
    studies = plan_patient(rng, course, size)
    female = bool(rng.random() < 0.5)
    age = int(np.clip(rng.normal(site.age_mean, 12), 25, 95))
    day, gap, prior, out = 0, 0, None, []
    for t, study in enumerate(studies):
        truth = describe_study(study, size)
        readings = read_study(rng, study, truth, reader_error)
        context = ReportContext(prior_days=None if t == 0 else gap)
        report, readings = write_report(rng, readings, CT_STYLE, context, prior)
        study_id = f"{patient_id}-s{t + 1}"
        row = {"patient_id": patient_id, "study_id": study_id, "id": f"{study_id}-ct", "report": report}
        for name in CT_FINDING_IDS:
            reading = readings[name]
            row[name] = None if unmentioned_missing and not reading.mentioned else reading.label
        row.update({"meta_site": site.name, "meta_view": "axial", "meta_sex": "F" if female else "M",
                    "meta_age": age, "meta_study_index": t + 1, "meta_day": day,
                    "meta_heart_scale": round(study.heart_scale, 3)})
        errors = 0
        for name in CT_FINDING_IDS:
            lesions = truth[name]
            row[f"meta_true_{name}"] = int(bool(lesions))
            row[f"meta_size_{name}"] = max((lesion.size_mm for lesion in lesions), default=None)
            row[f"meta_contrast_{name}"] = max((round(lesion.contrast, 3) for lesion in lesions), default=None)
            row[f"meta_reader_error_{name}"] = int(readings[name].wrong)
            errors += int(readings[name].wrong)
        row["meta_reader_error"] = errors
        out.append((row, render_ct(study, site, size), SPACING_MM))
        prior = readings
        gap = int(np.ceil(rng.exponential(90.0)))
        day += gap
    return out


def plan_patient(rng: np.random.Generator, course: np.ndarray, size: int = 96) -> list[CtStudy]:
    """One ``CtStudy`` per row of ``course`` (presence per study; columns as ``CT_FINDINGS``).

    Lengths are mm of a ``size``-voxel volume (``lesion_scale``).
    """
    col = {spec.name: k for k, spec in enumerate(CT_FINDINGS)}
    s = lesion_scale(size)
    an = sample_ct_anatomy(rng)
    big_heart = float(rng.uniform(1.2, 1.5))
    nodules = [_sample_nodule(rng, an, s) for _ in range(1 + int(rng.random() < 0.3))]
    emphysema = float(np.exp(rng.uniform(np.log(0.08), np.log(0.35))))
    studies, effusions = [], ()
    for t, row in enumerate(course):
        if row[col["pleural_effusion"]]:
            if not effusions or rng.random() < 0.2:
                sides = (-1, 1) if rng.random() < 0.35 else ((-1,) if rng.random() < 0.55 else (1,))
                effusions = tuple((side, s * float(np.exp(rng.uniform(np.log(8.0), np.log(60.0))))) for side in sides)
            else:
                effusions = tuple((side, float(np.clip(d * rng.uniform(0.7, 1.4), 8 * s, 60 * s)))
                                  for side, d in effusions)
        else:
            effusions = ()
        consolidations = tuple(_sample_consolidation(rng, an, s) for _ in range(1 + int(rng.random() < 0.2))) \
            if row[col["consolidation"]] else ()
        studies.append(CtStudy(
            anatomy=an,
            heart_scale=big_heart if row[col["cardiomegaly"]] else an.heart_scale,
            nodules=tuple((x, y, z, d * (1.0 + 0.03 * t), solid) for x, y, z, d, solid in nodules)
            if row[col["lung_nodule"]] else (),
            effusions=effusions,
            consolidations=consolidations,
            pericardial_mm=s * float(np.exp(rng.uniform(np.log(6.0), np.log(20.0)))) if row[col["pericardial_effusion"]]
            else 0.0,
            emphysema=emphysema if row[col["emphysema"]] else 0.0,
            seed=int(rng.integers(2**63)),
        ))
    return studies


def describe_study(study: CtStudy, size: int) -> dict[str, list[Lesion]]:
    """The lesions of a study by finding id (an empty list = absent).

    ``size_mm`` and ``contrast`` fill ``meta_size_*`` and ``meta_contrast_*`` (see the module docstring).
    """
    out: dict[str, list[Lesion]] = {name: [] for name in CT_FINDING_IDS}
    an, s = study.anatomy, lesion_scale(size)  # grades go by the planned size (mm in the 96-voxel chest)
    for x, y, z, diameter, solid in study.nodules:
        out["lung_nodule"].append(Lesion(
            "lung_nodule", side=_side(x), zone=_lobe(x, y, z, an), grade="solid" if solid else "ground-glass",
            size_mm=round(diameter, 1), contrast=885.0 if solid else 300.0))
    sides = {s for s, _ in study.effusions}
    for side, depth in study.effusions:
        grade = "small" if depth / s < 20 else "moderate" if depth / s < 40 else "large"
        out["pleural_effusion"].append(Lesion(
            "pleural_effusion", side="bilateral" if len(sides) == 2 else _side(side), grade=grade,
            size_mm=round(depth, 1), contrast=860.0))
    for x, y, z, radius, strength in study.consolidations:
        out["consolidation"].append(Lesion(
            "consolidation", side=_side(x), zone=_lobe(x, y, z, an), grade="dense" if strength > 0.75 else "patchy",
            size_mm=round(2 * radius, 1), contrast=round(880.0 * strength, 1),
            detail="air bronchograms" if strength > 0.75 else ""))
    if study.pericardial_mm > 0:
        mm = study.pericardial_mm
        out["pericardial_effusion"].append(Lesion(
            "pericardial_effusion", grade="small" if mm / s < 10 else "moderate" if mm / s < 16 else "large",
            size_mm=round(mm, 1), contrast=98.0))
    if study.emphysema > 0:
        f = study.emphysema
        out["emphysema"].append(Lesion(
            "emphysema", zone="upper lobes", grade="mild" if f < 0.15 else "moderate" if f < 0.25 else "severe",
            size_mm=round(100 * f, 1), contrast=-125.0))
    if study.heart_scale > 1.15:
        s = study.heart_scale
        out["cardiomegaly"].append(Lesion(
            "cardiomegaly", grade="mild" if s < 1.3 else "moderate" if s < 1.42 else "marked",
            size_mm=round(s, 3), contrast=round(s - 1.0, 3)))
    return out


def read_study(rng: np.random.Generator, study: CtStudy, truth: dict[str, list[Lesion]],
               reader_error: float = DEFAULT_READER_ERROR) -> dict[str, Reading]:
    """The reader's conclusion per finding: the truth, up to ``reader_error`` (see ``reading``)."""
    side = "right" if rng.random() < 0.5 else "left"
    lobe = str(rng.choice(["right upper lobe", "right lower lobe", "left upper lobe", "left lower lobe"]))
    mimics = {
        "lung_nodule": Lesion("lung_nodule", side=side, zone=lobe, grade="solid", size_mm=6.0),
        "pleural_effusion": Lesion("pleural_effusion", side=side, grade="small", size_mm=8.0),
        "consolidation": Lesion("consolidation", side=side, zone=lobe, grade="patchy", size_mm=24.0),
        "pericardial_effusion": Lesion("pericardial_effusion", grade="small", size_mm=6.0),
        "emphysema": Lesion("emphysema", zone="upper lobes", grade="mild", size_mm=8.0),
        "cardiomegaly": Lesion("cardiomegaly", grade="mild", size_mm=round(study.heart_scale, 3)),
    }
    return {name: read_finding(rng, name, truth[name], reader_error=reader_error, mimic=mimics[name])
            for name in CT_FINDING_IDS}


def write_nifti(path: Path, volume: np.ndarray, spacing: tuple[float, float, float] = SPACING_MM) -> None:
    """Write a (z, y, x) volume as gzipped RAS+ NIfTI with a diagonal affine centred on the volume."""
    # Columns run to the patient's left and rows posterior; reversing both makes i run to the right
    # and j anteriorly, so that (i, j, k) is RAS+ with a positive diagonal affine.
    data = np.ascontiguousarray(volume.transpose(2, 1, 0)[::-1, ::-1, :])
    dz, dy, dx = spacing
    shape = data.shape
    affine = np.diag([dx, dy, dz, 1.0])
    affine[:3, 3] = [-(shape[0] - 1) * dx / 2, -(shape[1] - 1) * dy / 2, -(shape[2] - 1) * dz / 2]
    image = nib.Nifti1Image(data, affine)
    image.header.set_xyzt_units("mm")
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=4) as gz:
        gz.write(image.to_bytes())


def _side(x: float) -> str:
    return "right" if x < 0 else "left"


def _lobe(x: float, y: float, z: float, an: CtAnatomy) -> str:
    height = (z - an.dome) / (1.0 - an.dome)
    if x < 0:
        if height > 0.55:
            return "right upper lobe"
        return "right middle lobe" if height > 0.25 and y < 0.0 else "right lower lobe"
    return "left upper lobe" if height > 0.4 else "left lower lobe"


def _sample_point(rng: np.random.Generator, an: CtAnatomy, depth_frac: float) -> tuple[float, float, float]:
    for _ in range(300):
        x = float(rng.uniform(-0.35, 0.35))
        y = float(rng.uniform(-0.25, 0.25))
        z = float(rng.uniform(an.dome, 0.95))
        if float(lung_mask(np.float32(x), np.float32(y), np.float32(z), an, 1.5)) > depth_frac:
            return x, y, z
    return -0.18, 0.02, 0.6


def _sample_nodule(rng: np.random.Generator, an: CtAnatomy, s: float) -> tuple[float, float, float, float, bool]:
    """A nodule of 6-20 mm in the 96-voxel chest, scaled by ``s``; at least 3 voxels, and sizes still spread 2x."""
    x, y, z = _sample_point(rng, an, 0.03)
    lo = max(6.0 * s, NODULE_MIN_VOXELS * SPACING_MM[2])
    hi = max(20.0 * s, 2 * lo)
    return x, y, z, float(np.exp(rng.uniform(np.log(lo), np.log(hi)))), bool(rng.random() < 0.75)


def _sample_consolidation(rng: np.random.Generator, an: CtAnatomy, s: float) -> tuple[float, float, float, float, float]:
    x, y, z = _sample_point(rng, an, 0.04)
    return x, y, z, s * float(rng.uniform(12, 30)), float(rng.uniform(0.5, 1.0))
