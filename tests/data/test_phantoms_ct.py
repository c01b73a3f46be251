"""CT phantoms: Hounsfield ranges, where findings are drawn, NIfTI files, course and reports."""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from greenfm.data.manifest import load_manifest
from greenfm.data.phantoms import CT_FINDING_IDS, generate_phantoms, get_site
from greenfm.data.phantoms.ct import ct_patient
from greenfm.data.phantoms.ct_draw import CtStudy, lung_mask, render_ct, sample_ct_anatomy
from greenfm.data.readers import read_volume

SIZE = 64
SITE = get_site("A")


@pytest.fixture(scope="module")
def base():
    anatomy = sample_ct_anatomy(np.random.default_rng(4))
    study = CtStudy(anatomy, anatomy.heart_scale, seed=9)
    return study, render_ct(study, SITE, SIZE)


def grid(size: int = SIZE):
    c = (np.arange(size) + 0.5) / size - 0.5
    z = (np.arange(size // 2) + 0.5) / (size // 2)
    return z[:, None, None], c[None, :, None], c[None, None, :]


def test_shape_dtype_and_tissue_values(base):
    study, volume = base
    assert volume.shape == (SIZE // 2, SIZE, SIZE) and volume.dtype == np.int16
    assert volume.min() >= -1024 and volume.max() <= 3071
    assert np.median(volume[:, :3, :3]) < -950  # air outside the body
    z, y, x = grid()
    lungs = np.broadcast_to(lung_mask(x, y, z, study.anatomy) > 0.02, volume.shape)
    assert -900 < np.median(volume[lungs]) < -780
    soft = volume[(volume > -150) & (volume < 100)]
    assert soft.size > 0.1 * volume.size  # fat, muscle, heart, liver
    assert np.percentile(volume, 99.9) > 350  # bone


def test_findings_change_the_volume_where_drawn(base):
    study, volume = base
    depth = SIZE // 2
    nodule = render_ct(replace(study, nodules=((-0.18, 0.02, 0.6, 12.0, True),)), SITE, SIZE)
    k, j, i = int(0.6 * depth), int(0.52 * SIZE), int(0.32 * SIZE)
    assert volume[k, j, i] < -600 and nodule[k, j, i] > -250
    assert np.count_nonzero(np.abs(nodule.astype(int) - volume) > 200) < 0.005 * volume.size
    z, y, x = grid()
    lungs = np.broadcast_to(lung_mask(x, y, z, study.anatomy) > 0.02, volume.shape)
    emphysema = render_ct(replace(study, emphysema=0.2), SITE, SIZE)
    assert (emphysema[lungs] < -950).mean() > (volume[lungs] < -950).mean() + 0.1
    effusion = render_ct(replace(study, effusions=((-1, 20.0),)), SITE, SIZE).astype(int) - volume
    right, left = effusion[:, SIZE // 2:, : SIZE // 2], effusion[:, SIZE // 2:, SIZE // 2:]
    assert right.mean() > 20 and abs(left.mean()) < 2  # dependent fluid on the patient's right
    heart = render_ct(replace(study, heart_scale=1.45), SITE, SIZE)
    assert np.count_nonzero((heart > 0) & (heart < 90)) > 1.15 * np.count_nonzero((volume > 0) & (volume < 90))


def test_ct_findings_grow_with_their_recorded_size(base):
    study, volume = base

    def changed(**changes) -> int:
        drawn = render_ct(replace(study, **changes), SITE, SIZE).astype(int)
        return int(np.count_nonzero(np.abs(drawn - volume) > 100))

    nodules = [changed(nodules=((-0.18, 0.02, 0.6, d, True),)) for d in (6.0, 12.0, 20.0)]
    assert 0 < nodules[0] < nodules[1] < nodules[2]  # even the smallest is drawn
    effusions = [changed(effusions=((-1, d),)) for d in (8.0, 30.0, 60.0)]
    assert 0 < effusions[0] < effusions[1] < effusions[2]
    consolidations = [changed(consolidations=((-0.18, 0.02, 0.5, r, 0.8),)) for r in (12.0, 20.0, 30.0)]
    assert 0 < consolidations[0] < consolidations[1] < consolidations[2]


def test_lesions_scale_with_the_chest_so_a_small_volume_shows_the_same_study():
    """The chest fills the field at any size, so lesions planned for 96 voxels shrink with a smaller grid."""
    rows = {}
    for size in (96, 32):
        rows[size] = pd.DataFrame([row for i in range(30)
                                   for row, _, _ in ct_patient(np.random.default_rng([8, i]), f"p{i}", 2, SITE, size)])
    big, small = rows[96], rows[32]
    assert (big["report"] != "").all() and list(big.columns) == list(small.columns)
    for name in ("pleural_effusion", "consolidation", "pericardial_effusion"):
        drawn = big[f"meta_true_{name}"] == 1
        assert drawn.any() and (small[f"meta_true_{name}"] == big[f"meta_true_{name}"]).all()
        ratio = small.loc[drawn, f"meta_size_{name}"] / big.loc[drawn, f"meta_size_{name}"]
        assert np.allclose(ratio, 1 / 3, atol=0.02), name  # sizes are rounded to 0.1 mm
    nodules = small["meta_true_lung_nodule"] == 1
    assert small.loc[nodules, "meta_size_lung_nodule"].between(4.5, 9.0 * 1.1).all()  # 3-6 voxels, +3% a study
    assert big.loc[nodules, "meta_size_lung_nodule"].between(6.0, 20.0 * 1.1).all()
    grades = re.compile(r"\b(small|moderate|large)\b")  # effusion grades go by the planned size, not the mm drawn
    assert [grades.findall(t) for t in big["report"]] == [grades.findall(t) for t in small["report"]]
    assert any(grades.findall(t) for t in big["report"])


def test_files_are_ras_nifti_with_spacing_and_byte_identical(tmp_path):
    a = generate_phantoms(tmp_path / "a", kind="ct", n_patients=2, size=48, seed=5)
    b = generate_phantoms(tmp_path / "b", kind="ct", n_patients=2, size=48, seed=5)
    files = sorted(p.relative_to(a.parent) for p in a.parent.rglob("*.nii.gz"))
    assert files and all(
        hashlib.sha256((a.parent / f).read_bytes()).digest() == hashlib.sha256((b.parent / f).read_bytes()).digest()
        for f in files)
    manifest = load_manifest(a)
    assert manifest.findings == list(CT_FINDING_IDS)
    image = nib.load(manifest.table["path"].iloc[0])
    assert image.shape == (48, 48, 24) and image.get_data_dtype() == np.int16
    assert tuple(float(v) for v in image.header.get_zooms()) == (1.5, 1.5, 3.0)
    assert nib.aff2axcodes(image.affine) == ("R", "A", "S")
    volume = read_volume(manifest.table["path"].iloc[0])
    assert volume.spacing == (3.0, 1.5, 1.5) and volume.array.shape == (24, 48, 48)


def test_course_prevalence_and_reports():
    rows = []
    for i in range(50):
        rng = np.random.default_rng([3, i])
        rows += [row for row, _, _ in ct_patient(rng, f"p{i}", int(rng.integers(1, 4)), SITE, 32)]
    table = pd.DataFrame(rows)
    truth = table[[f"meta_true_{n}" for n in CT_FINDING_IDS]]
    assert truth.to_numpy().sum() > 0 and (truth.sum(axis=1) == 0).mean() > 0.3
    assert truth.mean().max() < 0.5
    for name in CT_FINDING_IDS:
        assert set(table[name].unique()) <= {1, 0, -1}
        wrong = table[name] != table[f"meta_true_{name}"]
        assert (wrong == table[f"meta_reader_error_{name}"].astype(bool)).all()  # labels = truth up to reader errors
    assert table[[f"meta_reader_error_{n}" for n in CT_FINDING_IDS]].to_numpy().mean() < 0.08
    for name in CT_FINDING_IDS:
        drawn = table[f"meta_true_{name}"] == 1
        assert table.loc[drawn, f"meta_size_{name}"].notna().all()
        assert table.loc[~drawn, f"meta_size_{name}"].isna().all()
        assert table.loc[drawn, f"meta_contrast_{name}"].notna().all()
    assert table.loc[table["meta_true_lung_nodule"] == 1, "meta_size_lung_nodule"].min() >= 4.5  # 3 voxels
    nodules = table.loc[table["lung_nodule"] == 1, "report"]
    assert all(re.search(r"lobe", text) for text in nodules)
    emphysema = table.loc[table["emphysema"] == 1, "report"]
    assert all("emphysema" in text.lower() for text in emphysema)
