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

    effusion = diff(effusions=((RIGHT, 60.0),))  # the patient's right = the image left
    assert effusion[64:, :64].mean() > 5 * max(abs(effusion[64:, 64:].mean()), 0.2)
    assert effusion[64:, :64].mean() > 2 * max(effusion[:64, :64].mean(), 0.2)
    pneumothorax = diff(pneumothorax=(LEFT, 35.0))
    assert pneumothorax[:64, 64:].mean() < -0.8 and abs(pneumothorax[:, :64]).mean() < 0.1  # lucent apex
    nodule = diff(nodules=((-0.55 * an.half_width, an.apex_y + 80.0, 10.0, 0.9),))
    assert nodule.max() > 12 and (np.abs(nodule) > 4).mean() < 0.01  # bright, small, localised
    faint = diff(nodules=((-0.55 * an.half_width, an.apex_y + 80.0, 3.0, 0.3),))
    assert faint.max() < nodule.max() / 3  # small faint nodules are subtle
    heart = diff(ctr=0.62)
    assert heart[64:110, 20:108].mean() > 2


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


def test_a_raw_pixel_probe_learns_some_findings_but_not_nodules(cohort):
    """Logistic regression on 16 x 16 thumbnails, patient-grouped split, scored on the pixel truth.

    Observed over seeds (~650 images at 64 px): cardiomegaly 0.80-0.90, pleural effusion
    0.60-0.70, lung nodule 0.40-0.58. The bounds below leave room for that spread.
    """
    rows, images = cohort
    thumbs = images.reshape(len(images), 16, 4, 16, 4).mean(axis=(2, 4)).reshape(len(images), -1) / 255.0
    patient = np.array([int(row["patient_id"][1:]) for row in rows])
    test = patient % 3 == 0
    auroc = {}
    for name in ("cardiomegaly", "pleural_effusion", "lung_nodule"):
        y = np.array([row[f"meta_true_{name}"] for row in rows])
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000))
        probe.fit(thumbs[~test], y[~test])
        auroc[name] = roc_auc_score(y[test], probe.predict_proba(thumbs[test])[:, 1])
    assert auroc["cardiomegaly"] > 0.7, auroc
    assert auroc["pleural_effusion"] > 0.55, auroc
    assert auroc["lung_nodule"] < 0.75, auroc
