"""Radiograph phantoms: anatomy, where findings are drawn, disease course, and learnability."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from greenfm.data.phantoms import CXR_FINDING_IDS, custom_site, get_site
from greenfm.data.phantoms.course import CXR_FINDINGS
from greenfm.data.phantoms.cxr import cxr_patient, plan_patient, render_cxr
from greenfm.data.phantoms.cxr_anatomy import LEFT, RIGHT

STILL = custom_site("A", name="still", rotation_deg=0.0, offset_mm=0.0, drift=0.0)
"""Site A without positioning jitter, so that image halves map to body sides."""


def normal_study(seed: int = 0, site=STILL):
    rng = np.random.default_rng(seed)
    study = plan_patient(rng, np.zeros((1, len(CXR_FINDINGS)), dtype=bool), site)[0]
    return replace(study, device=False, portable=False)


def records(n_patients: int, size: int, site: str = "A", seed: int = 0):
    rows, images = [], []
    for i in range(n_patients):
        rng = np.random.default_rng([seed, i])
        for row, image in cxr_patient(rng, f"p{i}", int(rng.integers(1, 4)), get_site(site), size):
            rows.append(row)
            images.append(image)
    return rows, np.stack(images)


def test_render_is_deterministic_and_seeded():
    study = normal_study()
    a, b = render_cxr(study, STILL, 64), render_cxr(study, STILL, 64)
    assert a.dtype == np.uint8 and a.shape == (64, 64)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, render_cxr(replace(study, seed=study.seed + 1), STILL, 64))


def test_looks_like_a_chest_radiograph():
    image = np.stack([render_cxr(normal_study(s), STILL, 128) for s in range(6)]).astype(np.float32).mean(0)
    lungs = (image[40:80, 22:42].mean() + image[40:80, 86:106].mean()) / 2
    mediastinum = image[30:70, 58:70].mean()
    outside = np.concatenate([image[50:80, :3], image[50:80, -3:]]).mean()
    abdomen = image[118:, 40:88].mean()
    assert outside < lungs - 20  # air outside the body is darkest
    assert lungs < mediastinum - 40 and lungs < abdomen - 40  # dark lung fields, bright mediastinum
    # Ribs: the lung fields are striped along the vertical axis far more than across.
    lung = render_cxr(normal_study(1), STILL, 128)[30:90, 20:44].astype(np.float32)
    assert np.abs(np.diff(lung, axis=0)).mean() > np.abs(np.diff(lung, axis=1)).mean()


def test_findings_are_drawn_where_they_belong():
    study = normal_study(2)
    an = study.anatomy
    base = render_cxr(study, STILL, 128).astype(np.float32)

    def diff(**changes):
        return render_cxr(replace(study, **changes), STILL, 128).astype(np.float32) - base

    effusion = diff(effusions=((RIGHT, 60.0, 1.0),))  # the patient's right = the image left
    assert effusion[64:, :64].mean() > 5 * max(abs(effusion[64:, 64:].mean()), 0.2)
    assert effusion[64:, :64].mean() > 2 * max(effusion[:64, :64].mean(), 0.2)
    pneumothorax = diff(pneumothorax=(LEFT, 35.0, 1.0))
    assert pneumothorax[:64, 64:].mean() < -0.8 and abs(pneumothorax[:, :64]).mean() < 0.1  # lucent apex
    assert pneumothorax[:64, 64:].max() > 10  # the pleural line and the denser collapsed lung
    nodule = diff(nodules=((-0.55 * an.half_width, an.apex_y + 80.0, 20.0, 2.0),))
    assert nodule.max() > 30 and (np.abs(nodule) > 4).mean() < 0.01  # bright, small, localised
    assert np.abs(nodule[:, 64:]).max() == 0  # a finding changes only its own pixels
    consolidation = diff(consolidations=((-0.5 * an.half_width, an.apex_y + 120.0, 30.0, 0.8, True),))
    assert consolidation[:, :64].mean() > 1.5 and np.abs(consolidation[:, 64:]).max() == 0
    heart = diff(ctr=0.62)
    assert heart[64:110, 20:108].mean() > 2


FINDING_EXTREMES = {  # (smallest and faintest, largest and densest) of each finding, as drawn
    "cardiomegaly": ({"ctr": 0.53}, {"ctr": 0.68}),
    "pleural_effusion": ({"effusions": ((RIGHT, 25.0, 0.75),)}, {"effusions": ((RIGHT, 120.0, 1.0),)}),
    "pneumothorax": ({"pneumothorax": (LEFT, 20.0, 0.7)}, {"pneumothorax": (LEFT, 60.0, 1.0)}),
    "consolidation": ({"consolidations": ((-70.0, -30.0, 18.0, 0.6, False),)},
                      {"consolidations": ((-70.0, -30.0, 45.0, 1.0, False),)}),
    "lung_nodule": ({"nodules": ((-75.0, -70.0, 20.0, 2.0),)}, {"nodules": ((-75.0, -70.0, 30.0, 4.0),)}),
}


@pytest.mark.parametrize("finding", CXR_FINDING_IDS)
def test_every_finding_is_visible_at_64_px_and_grows_with_size(finding):
    """Even the smallest, faintest drawn finding changes the 64 px image; larger ones change it more."""
    small, large = FINDING_EXTREMES[finding]
    for seed in (2, 5):
        study = replace(normal_study(seed), ctr=0.44)
        base = render_cxr(study, STILL, 64).astype(np.float32)
        weak = np.abs(render_cxr(replace(study, **small), STILL, 64).astype(np.float32) - base)
        strong = np.abs(render_cxr(replace(study, **large), STILL, 64).astype(np.float32) - base)
        assert weak.max() >= 8, (finding, seed, weak.max())  # grey levels of 255
        assert strong.sum() > 2 * weak.sum() and strong.max() >= weak.max(), finding


def test_nodule_signal_grades_with_size_and_contrast():
    study = normal_study(3)
    base = render_cxr(study, STILL, 64).astype(np.float32)
    signal = {}
    for diameter in (20.0, 25.0, 30.0):
        for contrast in (2.0, 4.0):
            image = render_cxr(replace(study, nodules=((-75.0, -70.0, diameter, contrast),)), STILL, 64)
            signal[diameter, contrast] = float(np.abs(image.astype(np.float32) - base).sum())
    for contrast in (2.0, 4.0):
        assert signal[20.0, contrast] < signal[25.0, contrast] < signal[30.0, contrast]
    for diameter in (20.0, 25.0, 30.0):
        assert signal[diameter, 2.0] < signal[diameter, 4.0]


@pytest.mark.parametrize("size", [64, 256])
def test_nodule_is_a_sphere_of_its_true_diameter(size):
    """The drawn disc spans the nodule's diameter (a sphere's projection, not a narrower blob)."""
    study = normal_study(3)
    base = render_cxr(study, STILL, size).astype(np.float32)
    image = render_cxr(replace(study, nodules=((-75.0, -70.0, 30.0, 3.0),)), STILL, size).astype(np.float32)
    diff = image - base
    radius_px = 30.0 / 2 / (STILL.field_of_view_mm / size)
    disc = np.pi * radius_px**2
    assert 0.9 * disc < (diff > 0.05 * diff.max()).sum() < 1.6 * disc + 8  # covers the whole disc, not more
    assert (diff > 0.5 * diff.max()).sum() > 0.45 * disc  # flat-topped: a Gaussian blob would cover ~0.28


def test_pixel_truth_columns_follow_the_drawn_findings(cohort):
    rows, _ = cohort
    ranges = {"cardiomegaly": (0.5, 0.7), "pleural_effusion": (25.0, 120.0), "pneumothorax": (20.0, 60.0),
              "consolidation": (36.0, 90.0), "lung_nodule": (20.0, 40.0)}
    for name in CXR_FINDING_IDS:
        drawn = [r for r in rows if r[f"meta_true_{name}"] == 1]
        assert drawn, name
        for r in rows:
            assert (r[f"meta_size_{name}"] is None) == (r[f"meta_true_{name}"] == 0)
            assert (r[f"meta_contrast_{name}"] is None) == (r[f"meta_true_{name}"] == 0)
        sizes = np.array([r[f"meta_size_{name}"] for r in drawn])
        assert sizes.min() >= ranges[name][0] and sizes.max() <= ranges[name][1], name
        assert sizes.max() - sizes.min() > 0.25 * sizes.mean() or name == "cardiomegaly"  # graded, not one size
    normal = [r["meta_ctr"] for r in rows if r["meta_true_cardiomegaly"] == 0]
    assert max(normal) < 0.5
    nodules = [r["meta_size_lung_nodule"] / r["meta_pixel_mm"] for r in rows if r["meta_true_lung_nodule"]]
    assert min(nodules) >= 3.0  # at least 3 px across at 64 px


@pytest.fixture(scope="module")
def cohort():
    return records(260, 64)


def test_prevalence_correlation_and_course(cohort):
    rows, _ = cohort
    truth = np.array([[row[f"meta_true_{k}"] for k in CXR_FINDING_IDS] for row in rows])
    prevalence = truth.mean(0)
    assert np.all(prevalence > 0.04) and np.all(prevalence < 0.35), prevalence
    assert 0.35 < (truth.sum(1) == 0).mean() < 0.8  # plenty of normal images
    heart, effusion = truth[:, 0].astype(bool), truth[:, 1].astype(bool)
    assert effusion[heart].mean() > effusion[~heart].mean()  # heart failure brings effusions
    # Chronic findings persist: once a patient's nodule is drawn, later studies keep it (same size or larger).
    by_patient: dict[str, list[dict]] = {}
    for row in rows:
        by_patient.setdefault(row["patient_id"], []).append(row)
    persisted = 0
    for studies in by_patient.values():
        sizes = [s["meta_size_lung_nodule"] for s in studies]
        first = next((i for i, s in enumerate(sizes) if s is not None), None)
        if first is not None:
            assert all(s is not None for s in sizes[first:])
            assert all(b >= a for a, b in zip(sizes[first:-1], sizes[first + 1:], strict=True))
            persisted += len(sizes) - first - 1
    assert persisted > 0


def test_a_raw_pixel_probe_learns_the_large_findings(cohort):
    """Logistic regression on 16 x 16 thumbnails, patient-grouped split, scored on the pixel truth.

    A linear probe on thumbnails is far weaker than a CNN (see
    ``benchmarks/bench_phantom_learnability.py``); it separates cardiomegaly almost perfectly and
    effusion and consolidation above chance.
    """
    rows, images = cohort
    thumbs = images.reshape(len(images), 16, 4, 16, 4).mean(axis=(2, 4)).reshape(len(images), -1) / 255.0
    patient = np.array([int(row["patient_id"][1:]) for row in rows])
    test = patient % 3 == 0
    auroc = {}
    for name in ("cardiomegaly", "pleural_effusion", "consolidation"):
        y = np.array([row[f"meta_true_{name}"] for row in rows])
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000))
        probe.fit(thumbs[~test], y[~test])
        auroc[name] = roc_auc_score(y[test], probe.predict_proba(thumbs[test])[:, 1])
    # Observed at seed 0: cardiomegaly 0.99, pleural effusion 0.66, consolidation 0.66.
    assert auroc["cardiomegaly"] > 0.9, auroc
    assert auroc["pleural_effusion"] > 0.58, auroc
    assert auroc["consolidation"] > 0.58, auroc


def test_site_b_acquisition_differs_as_documented():
    """Site B: larger field (smaller anatomy), more quantum and electronic noise, more blur, flatter curve."""
    a, b = get_site("A"), get_site("B")
    assert b.field_of_view_mm / a.field_of_view_mm > 1.1 and b.quanta_per_mm2 < a.quanta_per_mm2 / 4
    assert b.blur_mm > 2 * a.blur_mm and b.contrast < a.contrast and b.gamma < a.gamma
    study = normal_study(4)

    def fine_detail(site) -> float:  # high-pass energy: noise adds to it, blur removes it
        image = render_cxr(study, site, 128).astype(np.float32)
        return float(np.abs(np.diff(image, axis=1)).mean())

    base = fine_detail(STILL)
    assert fine_detail(replace(STILL, quanta_per_mm2=b.quanta_per_mm2, electronic_noise=b.electronic_noise)) > base
    assert fine_detail(replace(STILL, blur_mm=b.blur_mm)) < base
    rows, _ = records(6, 64, site="B")
    rows_a, _ = records(6, 64, site="A")
    ratio = np.mean([r["meta_pixel_mm"] for r in rows]) / np.mean([r["meta_pixel_mm"] for r in rows_a])
    assert 1.05 < ratio < 1.35

