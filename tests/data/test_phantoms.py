"""The phantom writer: manifest format, determinism, sites, sizes, folders, summary."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from greenfm.data.manifest import load_manifest
from greenfm.data.phantoms import (
    CXR_FINDING_IDS,
    SITES,
    custom_site,
    generate_phantoms,
    get_site,
    summarize_phantoms,
)
from greenfm.errors import ConfigError, GreenfmError


def digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under a folder, by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    return generate_phantoms(tmp_path_factory.mktemp("cxr") / "set", n_patients=40, size=64, seed=3)


def test_manifest_loads_with_greenfm_and_has_the_promised_columns(small_set):
    manifest = load_manifest(small_set)
    assert manifest.findings == list(CXR_FINDING_IDS)
    table = pd.read_csv(small_set)
    assert list(table.columns[:5]) == ["path", "patient_id", "study_id", "id", "report"]
    for name in CXR_FINDING_IDS:
        assert set(table[name].unique()) <= {1, 0, -1}
        assert set(table[f"meta_true_{name}"].unique()) <= {0, 1}
        for column in ("size", "contrast", "reader_error"):
            assert f"meta_{column}_{name}" in table
    assert {"meta_reader_error", "meta_pixel_mm"} <= set(table.columns)
    assert table["id"].is_unique and table["path"].is_unique
    assert not table["path"].str.startswith("/").any()  # relative to the manifest
    assert (table["meta_site"] == "A").all()
    per_patient = table.groupby("patient_id").size()
    assert per_patient.min() >= 1 and per_patient.max() <= 4 and per_patient.nunique() > 1
    # A study's images carry its patient's id; studies are numbered per patient.
    assert (table["study_id"].str.rsplit("-s", n=1).str[0] == table["patient_id"]).all()


def test_images_are_8bit_grey_png_at_the_requested_size(small_set):
    table = pd.read_csv(small_set)
    with Image.open(small_set.parent / table["path"].iloc[0]) as image:
        assert image.mode == "L" and image.size == (64, 64) and image.format == "PNG"


def test_same_seed_gives_byte_identical_files_and_another_seed_differs(tmp_path):
    a = generate_phantoms(tmp_path / "a", n_patients=6, size=64, seed=11)
    b = generate_phantoms(tmp_path / "b", n_patients=6, size=64, seed=11, workers=2)  # split over processes
    c = generate_phantoms(tmp_path / "c", n_patients=6, size=64, seed=12)
    assert digest(a.parent) == digest(b.parent)
    first = pd.read_csv(a)["path"].iloc[0]
    other = pd.read_csv(c)["path"].iloc[0]
    assert np.any(np.asarray(Image.open(a.parent / first)) != np.asarray(Image.open(c.parent / other)))
    assert digest(a.parent)[MANIFEST] != digest(c.parent)[MANIFEST]


MANIFEST = "manifest.csv"


@pytest.mark.parametrize("size", [64, 128, 224])
def test_supported_sizes(tmp_path, size):
    manifest = generate_phantoms(tmp_path / "s", n_patients=2, images_per_patient=(1, 1), size=size, seed=0)
    path = manifest.parent / pd.read_csv(manifest)["path"].iloc[0]
    assert np.asarray(Image.open(path)).shape == (size, size)


def test_sites_change_acquisition_and_population(tmp_path):
    means = {}
    for name in ("A", "B"):
        manifest = generate_phantoms(tmp_path / name, n_patients=60, size=64, seed=0, site=name)
        table = pd.read_csv(manifest)
        images = np.stack([np.asarray(Image.open(manifest.parent / p), np.float32) for p in table["path"]])
        means[name] = (images.mean(), table["meta_view"].eq("AP").mean(), table["patient_id"].iloc[0])
    assert means["A"][2].startswith("cxrA-") and means["B"][2].startswith("cxrB-")
    assert means["B"][1] > 0.6 > 0.2 > means["A"][1]  # site B is mostly bedside AP films
    assert abs(means["A"][0] - means["B"][0]) > 3  # a different look-up table and field of view


def test_reader_error_flips_labels_only_and_zero_gives_the_truth(tmp_path):
    exact = generate_phantoms(tmp_path / "exact", n_patients=30, size=32, seed=4, reader_error=0.0)
    noisy = generate_phantoms(tmp_path / "noisy", n_patients=30, size=32, seed=4, reader_error=0.3)
    a, b = pd.read_csv(exact), pd.read_csv(noisy)
    for name in CXR_FINDING_IDS:
        assert (a[name] == a[f"meta_true_{name}"]).all()  # no reader error: labels are the pixel truth
        assert (a[f"meta_reader_error_{name}"] == 0).all()
        assert (b[f"meta_true_{name}"] == a[f"meta_true_{name}"]).all()
        assert ((b[name] != b[f"meta_true_{name}"]) == b[f"meta_reader_error_{name}"].astype(bool)).all()
    flipped = b[[f"meta_reader_error_{n}" for n in CXR_FINDING_IDS]].to_numpy()
    assert 0.2 < flipped.mean() < 0.4 and (b["meta_reader_error"] == flipped.sum(axis=1)).all()
    images = {k: v for k, v in digest(exact.parent).items() if k.endswith(".png")}
    assert images == {k: v for k, v in digest(noisy.parent).items() if k.endswith(".png")}  # same pixels
    assert json.loads((exact.parent / "phantoms.json").read_text())["reader_error"] == 0.0
    with pytest.raises(ConfigError, match="reader_error"):
        generate_phantoms(tmp_path / "bad", n_patients=1, reader_error=0.9)


def test_custom_site_profile(tmp_path):
    noisy = custom_site("A", name="noisy", quanta_per_mm2=20.0)
    manifest = generate_phantoms(tmp_path / "n", n_patients=3, size=64, seed=0, site=noisy)
    table = pd.read_csv(manifest)
    assert table["patient_id"].str.startswith("cxrnoisy-").all()
    assert json.loads((manifest.parent / "phantoms.json").read_text())["site"]["quanta_per_mm2"] == 20.0
    with pytest.raises(ConfigError):
        custom_site("A", no_such_field=1)
    with pytest.raises(ConfigError, match="unknown phantom site"):
        get_site("Z")
    assert set(SITES) >= {"A", "B"}


def test_unmentioned_findings_can_be_left_missing(tmp_path):
    manifest = generate_phantoms(tmp_path / "m", n_patients=30, size=32, seed=1, unmentioned="missing")
    labels = load_manifest(manifest).labels()
    assert np.isnan(labels).any()  # e.g. nodules are rarely negated explicitly
    assert set(np.unique(labels[~np.isnan(labels)])) <= {-1.0, 0.0, 1.0}


def test_bad_arguments_and_foreign_folders_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="kind"):
        generate_phantoms(tmp_path / "x", kind="mri")
    with pytest.raises(ConfigError, match="size"):
        generate_phantoms(tmp_path / "x", size=8)
    with pytest.raises(ConfigError, match="images_per_patient"):
        generate_phantoms(tmp_path / "x", images_per_patient=(3, 1))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        generate_phantoms(foreign, n_patients=1)
    assert (foreign / "notes.txt").exists()


def test_regenerating_replaces_a_previous_set(tmp_path):
    generate_phantoms(tmp_path / "r", n_patients=8, size=32, seed=0)
    manifest = generate_phantoms(tmp_path / "r", n_patients=2, images_per_patient=(1, 1), size=32, seed=0)
    assert len(list((tmp_path / "r" / "images").rglob("*.png"))) == len(pd.read_csv(manifest)) == 2


def test_summary_counts_and_prints(small_set):
    summary = summarize_phantoms(small_set)
    table = pd.read_csv(small_set)
    assert summary.kind == "cxr" and summary.sites == ("A",)
    assert (summary.n_images, summary.n_patients) == (len(table), 40)
    assert summary.true["cardiomegaly"] == pytest.approx(table["meta_true_cardiomegaly"].mean())
    text = str(summary)
    assert "40 patients" in text and "pleural_effusion" in text
    assert summarize_phantoms(small_set.parent).n_images == summary.n_images  # a folder works too
    with pytest.raises(GreenfmError):
        summarize_phantoms(small_set.parent / "missing.csv")
