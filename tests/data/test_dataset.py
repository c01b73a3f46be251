"""ImageDataset (decoded and cached) and the training augmentations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from greenfm.data.augment import AUGMENTATIONS, RandomSideBars, get_augment, rfg_augment
from greenfm.data.cache import build_cache
from greenfm.data.contract import PRESETS, Contract, normalize, to_contract
from greenfm.data.dataset import ImageDataset, decode_to_contract
from greenfm.data.manifest import load_manifest
from greenfm.errors import BadInputError, ConfigError


def write_images(folder: Path, n: int, *, size=(40, 56), mode="L", seed=0) -> list[Path]:
    """Random-texture PNGs: 8-bit grey (L), RGB, or 16-bit grey (I;16)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        if mode == "I;16":
            array = rng.integers(0, 65536, size, dtype=np.uint16)
        else:
            array = rng.integers(0, 256, (*size, 3) if mode == "RGB" else size, dtype=np.uint8)
        path = folder / f"img{i:03d}.png"
        Image.fromarray(array).save(path)
        paths.append(path)
    return paths


def write_manifest(folder: Path, paths: list[Path], *, name="manifest.csv") -> Path:
    n = len(paths)
    table = pd.DataFrame({
        "path": [p.relative_to(folder).as_posix() for p in paths],
        "patient_id": [f"p{i // 2}" for i in range(n)],
        "effusion": [[1, 0, -1, ""][i % 4] for i in range(n)],
        "nodule": [[0, 1][i % 2] for i in range(n)],
    })
    table.to_csv(folder / name, index=False)
    return folder / name


@pytest.fixture()
def grey_manifest(tmp_path):
    return load_manifest(write_manifest(tmp_path, write_images(tmp_path / "img", 10)))


def test_items_have_normalised_images_and_nan_aware_labels(grey_manifest):
    contract = PRESETS["cxr-medpeft"].replace(size=32)
    ds = ImageDataset(grey_manifest, contract)
    item = ds[2]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert item["index"] == 2
    assert item["labels"].dtype == torch.float32 and item["labels"].tolist() == [-1.0, 0.0]
    assert torch.isnan(ds[3]["labels"][0])
    lo, hi = (0 - 0.4978) / 0.2449, (1 - 0.4978) / 0.2449
    assert lo - 1e-5 <= item["image"].min() and item["image"].max() <= hi + 1e-5
    assert "labels" not in ImageDataset(grey_manifest, contract, labels=False)[0]
    raw = ImageDataset(grey_manifest, contract, normalized=False)[2]["image"]
    assert raw.dtype == torch.uint8 and raw.shape == (1, 32, 32)
    assert torch.equal(normalize(raw[None], contract)[0], item["image"])  # batch-wise, e.g. on the GPU
    assert ds.findings == ["effusion", "nodule"] and ds.patient_ids[:3].tolist() == ["p0", "p0", "p1"]


def test_decoding_goes_through_the_contract(grey_manifest):
    contract = PRESETS["cxr-medpeft"].replace(size=24)
    path = grey_manifest.table["path"].iat[0]
    expected = to_contract(np.asarray(Image.open(path)), contract)
    assert np.array_equal(decode_to_contract(path, contract), expected)
    assert torch.allclose(ImageDataset(grey_manifest, contract)[0]["image"], normalize(expected, contract))


@pytest.mark.parametrize("mode, contract", [
    ("L", PRESETS["cxr-medpeft"].replace(size=24)),
    ("RGB", PRESETS["rfg"].replace(size=(20, 28))),
    ("I;16", Contract(modality="xray", bit_depth=16, size=24, resize="letterbox", mean=0.5, std=0.25)),
])
def test_pixels_identical_with_and_without_cache(tmp_path, mode, contract):
    manifest = load_manifest(write_manifest(tmp_path, write_images(tmp_path / "img", 6, mode=mode)))
    store = build_cache(manifest, contract, tmp_path / "cache", progress=False)
    assert store.pixels.dtype == contract.dtype
    decoded, cached = ImageDataset(manifest, contract), ImageDataset(manifest, contract, cache=store)
    for i in range(len(manifest)):
        assert torch.equal(decoded[i]["image"], cached[i]["image"])
        assert torch.equal(decoded[i]["labels"].nan_to_num(7), cached[i]["labels"].nan_to_num(7))


@pytest.mark.parametrize("augment", [None, "medpeft"])
@pytest.mark.parametrize("mode, contract", [
    ("L", PRESETS["cxr-medpeft"].replace(size=16)),
    ("I;16", Contract(modality="xray", bit_depth=16, size=16, mean=0.5, std=0.25)),
])
def test_a_batched_fetch_equals_item_by_item(tmp_path, mode, contract, augment):
    manifest = load_manifest(write_manifest(tmp_path, write_images(tmp_path / "img", 7, mode=mode)))
    store = build_cache(manifest, contract, tmp_path / "cache", progress=False)
    ds = ImageDataset(manifest, contract, cache=store, augment=augment and get_augment(augment, contract))
    order = [5, 0, 3, 3, 6]
    torch.manual_seed(1)
    batch = ds.__getitems__(order)
    torch.manual_seed(1)
    items = [ds[i] for i in order]
    for got, want in zip(batch, items):
        assert torch.equal(got["image"], want["image"]) and got["index"] == want["index"]
        assert torch.equal(got["labels"].nan_to_num(7), want["labels"].nan_to_num(7))
    torch.manual_seed(1)
    loader = DataLoader(torch.utils.data.Subset(ds, order), batch_size=5, generator=torch.Generator())
    loaded = next(iter(loader))  # Subset passes the batch on
    assert torch.equal(loaded["image"], torch.stack([item["image"] for item in items]))


def test_cached_dataset_serves_a_subset_and_refuses_foreign_rows(tmp_path, grey_manifest):
    contract = PRESETS["cxr-medpeft"].replace(size=16)
    store = build_cache(grey_manifest, contract, tmp_path / "cache", progress=False)
    half = grey_manifest.subset(np.arange(len(grey_manifest)) % 2 == 1)
    ds = ImageDataset(half, contract, cache=store)
    assert len(ds) == 5 and torch.equal(ds[0]["image"], ImageDataset(grey_manifest, contract, cache=store)[1]["image"])
    other = load_manifest(write_manifest(tmp_path / "other", write_images(tmp_path / "other" / "img", 2)))
    with pytest.raises(BadInputError, match="not in the cache"):
        ImageDataset(other, contract, cache=store)
    with pytest.raises(ConfigError, match="size"):
        ImageDataset(grey_manifest, contract.replace(size=20), cache=store)


def test_cached_dataset_works_in_dataloader_workers(tmp_path, grey_manifest):
    contract = PRESETS["cxr-medpeft"].replace(size=16)
    store = build_cache(grey_manifest, contract, tmp_path / "cache", progress=False)
    ds = ImageDataset(grey_manifest, contract, cache=store)
    batches = list(DataLoader(ds, batch_size=4, num_workers=2))
    images = torch.cat([b["image"] for b in batches])
    assert images.shape == (10, 3, 16, 16)
    assert torch.equal(images, torch.stack([ds[i]["image"] for i in range(10)]))


def test_undecodable_file_names_the_file(tmp_path):
    paths = write_images(tmp_path / "img", 2)
    paths[1].write_bytes(paths[1].read_bytes()[:60])  # truncated PNG
    manifest = load_manifest(write_manifest(tmp_path, paths), check_files=False)
    ds = ImageDataset(manifest, PRESETS["cxr-medpeft"].replace(size=16))
    with pytest.raises(BadInputError, match="img001.png"):
        ds[1]


# -- augmentations -------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
@pytest.mark.parametrize("dtype, contract", [
    (torch.uint8, PRESETS["rfg"].replace(size=48)),
    (torch.uint8, PRESETS["cxr-medpeft"].replace(size=40)),
    (torch.uint16, Contract(modality="xray", bit_depth=16, size=(40, 32), mean=0.5, std=0.5)),
])
def test_augmentations_keep_shape_and_dtype_and_are_seeded(name, dtype, contract):
    augment = get_augment(name, contract)
    high = 256 if dtype == torch.uint8 else 65536
    x = torch.randint(0, high, (contract.stored_channels, *contract.size), dtype=torch.int32).to(dtype)
    outs = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        outs.append(torch.stack([augment(x) for _ in range(8)]))
    assert outs[0].shape == (8, *x.shape) and outs[0].dtype == dtype
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])


def test_rfg_augmentation_follows_the_methods():
    colour = [type(t).__name__ for t in rfg_augment(PRESETS["rfg"]).transforms]
    assert colour[:2] == ["RandomHorizontalFlip", "RandomVerticalFlip"] and colour[-1] == "RandomChoice"
    steps = rfg_augment(PRESETS["rfg"]).transforms
    assert steps[2].p == 0.1 and isinstance(steps[2].transforms[0], RandomSideBars)
    assert steps[3].p == 0.25 and steps[4].p == 0.25  # rotation, colour jitter
    crop, centre, squash = steps[-1].transforms
    assert crop.scale == (0.7, 1.0) and crop.ratio == pytest.approx((3 / 5, 5 / 3))
    assert centre.transforms[0].size == [509] and squash.size == [392, 392]
    grey = [type(t.transforms[0]).__name__ if hasattr(t, "transforms") else type(t).__name__
            for t in rfg_augment(PRESETS["cxr-medpeft"]).transforms]
    assert "RandomSideBars" not in grey and "ColorJitter" not in grey and "RandomRotation" in grey


def test_side_bars_scale_with_width_and_stay_black():
    torch.manual_seed(0)
    x = torch.full((3, 64, 512), 200, dtype=torch.uint8)
    widths = {(RandomSideBars()(x).shape[-1] - 512) // 2 for _ in range(200)}
    assert min(widths) >= round(33 / 2) and max(widths) <= round(149 / 2) and len(widths) > 10
    out = RandomSideBars()(x)
    bar = (out.shape[-1] - 512) // 2
    assert (out[..., :bar] == 0).all() and (out[..., -bar:] == 0).all() and (out[..., bar:-bar] == 200).all()
    with pytest.raises(ConfigError, match="rfg, cxr, medpeft"):
        get_augment("randaug", PRESETS["rfg"])


def test_augmented_dataset_items_keep_contract_shape(grey_manifest, tmp_path):
    contract = PRESETS["cxr-medpeft"].replace(size=32)
    store = build_cache(grey_manifest, contract, tmp_path / "cache", progress=False)
    ds = ImageDataset(grey_manifest, contract, cache=store, augment=get_augment("medpeft", contract))
    torch.manual_seed(3)
    a = ds[0]["image"]
    torch.manual_seed(3)
    assert torch.equal(a, ds[0]["image"]) and a.shape == (3, 32, 32)
