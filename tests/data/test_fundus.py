"""Offline fundus preprocessing (METHODS 2.4): crop to the fundus, margin, zero-pad square, Lanczos;
new files and a new manifest, the source never written."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from greenfm import api
from greenfm.data.fundus import fundus_box, preprocess_fundus_image
from greenfm.data.manifest import load_manifest
from greenfm.errors import BadInputError


def fundus_like(height: int = 300, width: int = 420, centre=(150, 230), radius: int = 120, seed: int = 0) -> np.ndarray:
    """An orange disc with darker vessels in a black frame with faint sensor noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    inside = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2
    image = rng.integers(0, 4, size=(height, width, 3)).astype(np.float32)  # the black frame is never quite 0
    disc = np.array([200.0, 110.0, 50.0]) * (0.8 + 0.2 * np.cos((xx - centre[1]) / 25.0))[..., None]
    vessels = (np.abs(np.sin((yy + 0.5 * xx) / 9.0)) < 0.08)[..., None]
    image = np.where(inside[..., None], np.where(vessels, disc * 0.5, disc), image)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def test_box_is_the_disc_plus_a_two_and_a_half_percent_margin():
    top, bottom, left, right = fundus_box(fundus_like())
    margin = round(0.025 * 241)  # the disc spans 241 rows and columns
    assert abs(top - (30 - margin)) <= 1 and abs(bottom - (271 + margin)) <= 1
    assert abs(left - (110 - margin)) <= 1 and abs(right - (351 + margin)) <= 1
    assert fundus_box(np.zeros((50, 60, 3), np.uint8)) == (0, 50, 0, 60)  # nothing bright: kept whole


def test_output_is_square_padded_with_black_and_centred():
    # a disc cut by the top and bottom of the frame, as many cameras record it: a wide crop
    image = fundus_like(height=200, width=420, centre=(100, 210), radius=150)
    out, (top, bottom, left, right) = preprocess_fundus_image(image, size=128)
    assert out.shape == (128, 128, 3) and out.dtype == np.uint8
    assert (top, bottom) == (0, 200) and right - left > 300  # the full height, the disc's width
    band = round(128 * (1 - 200 / (right - left)) / 2)  # black bands above and below
    assert out[: band - 3].max() <= 2 and out[-(band - 3) :].max() <= 2  # black up to Lanczos ringing
    assert out[64, 64].mean() > 60  # the fundus in the middle
    grey, _ = preprocess_fundus_image(image.mean(axis=-1).astype(np.uint8), size=32)
    assert grey.shape == (32, 32)


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_verb_writes_new_files_and_manifest_and_never_the_source(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for k in range(3):
        Image.fromarray(fundus_like(seed=k, centre=(150, 200 + 10 * k))).save(source / f"eye{k}.png")
    pd.DataFrame({"path": [f"eye{k}.png" for k in range(3)], "patient_id": ["a", "a", "b"],
                  "dr": [1, 0, 1]}).to_csv(source / "manifest.csv", index=False)  # fmt: skip
    before = {p.name: _digest(p) for p in source.iterdir()}

    summary = api.data_preprocess(data=source / "manifest.csv", out=tmp_path / "out", size=64, workers=1)
    assert summary.images == 3 and summary.skipped == []
    manifest = load_manifest(tmp_path / "out" / "manifest.csv")
    assert manifest.findings == ["dr"] and len(manifest) == 3
    for path in manifest.table["path"]:
        with Image.open(path) as image:
            assert image.size == (64, 64) and image.format == "JPEG"
    assert manifest.table["meta_fundus_box"].str.count(",").eq(3).all()
    assert {p.name: _digest(p) for p in source.iterdir()} == before  # the source untouched

    with pytest.raises(BadInputError, match="--overwrite"):
        api.data_preprocess(data=source / "manifest.csv", out=tmp_path / "out", size=64, workers=1)
    api.data_preprocess(data=source / "manifest.csv", out=tmp_path / "out", size=32, workers=1, overwrite=True,
                        format="png")  # fmt: skip
    assert len(list((tmp_path / "out" / "images").iterdir())) == 3
    with pytest.raises(BadInputError, match="not empty"):
        api.data_preprocess(data=source / "manifest.csv", out=source, size=64, workers=1)


def test_retinamnist_images_preprocess_to_square_files(shared_data, tmp_path):
    npz = shared_data / "medmnist" / "retinamnist_28.npz"
    if not npz.is_file():
        pytest.skip(f"{npz} is absent")
    api.data_import(npz, out=tmp_path / "retina" / "manifest.csv")
    rows = pd.read_csv(tmp_path / "retina" / "manifest.csv")
    subset = tmp_path / "retina" / "subset.csv"
    rows.iloc[:: max(1, len(rows) // 96)].to_csv(subset, index=False)  # about 100 of the 1,600 images
    summary = api.data_preprocess(data=subset, out=tmp_path / "out", size=56, workers=1)
    manifest = load_manifest(tmp_path / "out" / "manifest.csv")
    assert summary.images == len(manifest) == len(pd.read_csv(subset)) > 50
    boxes = np.array([[int(v) for v in box.split(",")] for box in manifest.table["meta_fundus_box"]])
    heights, widths = boxes[:, 1] - boxes[:, 0], boxes[:, 3] - boxes[:, 2]
    # MedMNIST fundus images are already cropped to the fundus: the box keeps most of each 28 px image
    assert np.median(heights) >= 20 and np.median(widths) >= 20 and heights.max() <= 28
    for path in manifest.table["path"][:5]:
        with Image.open(path) as image:
            assert image.size == (56, 56) and image.mode == "RGB"
