"""Augment before downsizing (METHODS 2.4): a cache kept at the contract's ``source_size``,
augmentation there, the resize to ``size`` last, as the official 1024 px pipeline does."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2

from greenfm.data.augment import recommended_source_size, rfg_augment, rfg_final_choice, with_source_size
from greenfm.data.cache import build_cache
from greenfm.data.contract import Contract, ContractMismatchError, check_compatible, get_contract
from greenfm.data.dataset import ImageDataset
from greenfm.errors import ConfigError


def grating(side: int = 1024) -> np.ndarray:
    """A fundus-sized pattern with detail finer than 392 px can hold: rings, a diagonal grating, a marker."""
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    rings = np.sin(2 * np.pi * 40 * np.hypot(yy - 0.5, xx - 0.5))
    lines = np.sin(2 * np.pi * 60 * (xx + yy))
    image = np.stack([rings, lines, rings * lines], axis=-1) * 0.5 + 0.5
    image[side // 2 - 40 : side // 2 + 40, side // 3 : side // 3 + 20] = [1.0, 0.0, 0.0]
    return np.round(image * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def pattern_manifest(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pattern")
    Image.fromarray(grating()).save(folder / "eye.png")
    (folder / "manifest.csv").write_text("path,patient_id\neye.png,p1\n")
    return folder / "manifest.csv"


def official_centre_crop(image: np.ndarray) -> torch.Tensor:
    """The official order: the 1024 px image, then Resize(509) + CenterCrop(392)."""
    x = torch.from_numpy(image).permute(2, 0, 1).contiguous()
    return v2.Compose([v2.Resize(509, interpolation=InterpolationMode.BILINEAR, antialias=True), v2.CenterCrop(392)])(x)


def centre_crop_item(manifest, contract: Contract, cache_root) -> torch.Tensor:
    store = build_cache(manifest, contract, cache_root, progress=False)
    centre = rfg_final_choice(contract).transforms[1]  # the Resize(509) + CenterCrop(392) branch
    dataset = ImageDataset(manifest, contract, cache=store, augment=centre, labels=False, normalized=False)
    return dataset[0]["image"]


def test_centre_crop_of_a_known_pattern_matches_the_official_order(pattern_manifest, tmp_path):
    rfg = get_contract("rfg")  # 392 px, squash, bilinear
    official = official_centre_crop(grating()).float()
    at_1024 = centre_crop_item(pattern_manifest, rfg.replace(source_size=1024), tmp_path).float()
    at_512 = centre_crop_item(pattern_manifest, with_source_size(rfg, "rfg"), tmp_path).float()
    at_392 = centre_crop_item(pattern_manifest, rfg, tmp_path).float()  # the old order: the crop upsamples
    assert at_1024.shape == at_512.shape == at_392.shape == official.shape == (3, 392, 392)
    assert torch.equal(at_1024, official)  # the official resolution gives the official pixels
    error = lambda x: (x - official).abs().mean().item()  # noqa: E731
    assert error(at_512) < 0.6 * error(at_392), (error(at_512), error(at_392))  # about half the old error


def test_source_size_is_recorded_keys_the_cache_and_keeps_old_fingerprints():
    rfg = get_contract("rfg")
    assert "source_size" not in rfg.to_dict() and rfg.stored_size == (392, 392)
    wide = rfg.replace(source_size=512)
    assert wide.to_dict()["source_size"] == [512, 512] and wide.stored_size == (512, 512)
    assert wide.pixel_fingerprint != rfg.pixel_fingerprint and wide.fingerprint != rfg.fingerprint
    assert Contract.from_dict(wide.to_dict()) == wide and wide.replace(source_size=None) == rfg
    with pytest.raises(ContractMismatchError, match="source_size"):
        check_compatible(rfg, wide, "cache x")
    with pytest.raises(ConfigError, match="smaller than size"):
        rfg.replace(source_size=256)
    with pytest.raises(ConfigError, match="aspect ratio"):
        rfg.replace(source_size=(512, 1024))


def test_recommended_source_size_only_for_the_cropping_rfg_augmentation():
    rfg = get_contract("rfg")
    assert recommended_source_size("rfg", rfg) == 512  # 509 rounded up to a multiple of 32
    assert with_source_size(rfg, "rfg").source_size == (512, 512)
    assert with_source_size(rfg, "rfg", 1024).source_size == (1024, 1024)
    assert with_source_size(rfg, "rfg", 0).source_size is None
    assert with_source_size(rfg, "cxr").source_size is None and with_source_size(rfg, "none").source_size is None
    assert with_source_size(rfg.replace(source_size=1024), "none").source_size == (1024, 1024)  # the contract's own


def test_items_come_out_at_the_training_size_with_and_without_augmentation(pattern_manifest, tmp_path):
    contract = get_contract("rfg").replace(source_size=512)
    store = build_cache(pattern_manifest, contract, tmp_path, progress=False)
    assert store.pixels.shape == (1, 3, 512, 512)
    plain = ImageDataset(pattern_manifest, contract, cache=store, labels=False)[0]["image"]
    assert plain.shape == (3, 392, 392) and plain.dtype == torch.float32
    torch.manual_seed(0)
    augment = rfg_augment(contract)
    shapes = {tuple(ImageDataset(pattern_manifest, contract, cache=store, augment=augment, labels=False)[0]["image"].shape)
              for _ in range(12)}  # fmt: skip
    assert shapes == {(3, 392, 392)}
    decoded = ImageDataset(pattern_manifest, contract, labels=False)[0]["image"]  # no cache: the same pixels
    assert torch.equal(decoded, plain)
