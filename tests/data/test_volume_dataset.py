"""``VolumeDataset``: ImageDataset's items with (C, D, H, W) images, random crops in training, centred in evaluation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from greenfm.data.cache import build_cache
from greenfm.data.contract import PRESETS, get_contract
from greenfm.data.dataset import ImageDataset
from greenfm.data.image_data import Volume
from greenfm.data.manifest import load_manifest
from greenfm.data.readers import display_affine
from greenfm.data.volume_dataset import VolumeDataset, volume_augment
from greenfm.data.volume_files import write_nifti
from greenfm.errors import BadInputError, ConfigError

SMALL = get_contract("ct-chest").replace(size=[4, 8, 8], pad_size=[6, 12, 12])


def _manifest(tmp_path, n=3, shape=(6, 12, 12)):
    rng = np.random.default_rng(0)
    rows = []
    for k in range(n):
        hu = rng.integers(-1000, 200, shape).astype(np.int16)  # every voxel distinct enough to tell crops apart
        path = write_nifti(Volume(hu, (3.0, 1.5, 1.5), display_affine((3.0, 1.5, 1.5))), tmp_path / f"v{k}.nii.gz")
        rows.append({"path": path.name, "patient_id": f"p{k}", "id": f"v{k}", "finding": k % 2})
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    return load_manifest(tmp_path / "manifest.csv")


def test_items_match_image_dataset_and_cache_equals_decoding(tmp_path):
    manifest = _manifest(tmp_path)
    store = build_cache(manifest, SMALL, tmp_path / "cache", progress=False)
    cached, decoded = VolumeDataset(manifest, SMALL, cache=store), VolumeDataset(manifest, SMALL)
    item = cached[1]
    assert set(item) == {"image", "labels", "index"} and item["index"] == 1
    assert item["image"].shape == (1, 4, 8, 8) and item["image"].dtype == torch.float32
    assert item["labels"].tolist() == [1.0] and -1.0 <= item["image"].min() <= item["image"].max() <= 1.0
    for i in range(3):
        assert torch.equal(cached[i]["image"], decoded[i]["image"])
    batch = cached.__getitems__([2, 0])
    assert torch.equal(batch[0]["image"], cached[2]["image"]) and batch[1]["index"] == 0
    stored = torch.from_numpy(store[1].astype(np.int32))  # evaluation: the centre crop of the stored volume
    centre = stored[:, 1:5, 2:10, 2:10].float() / 65535 * 2 - 1
    assert torch.allclose(item["image"], centre, atol=1e-5)


def test_training_crops_are_random_and_follow_torch_seeding(tmp_path):
    manifest = _manifest(tmp_path, n=1)
    train = VolumeDataset(manifest, SMALL, train=True, cache=build_cache(manifest, SMALL, tmp_path / "c", progress=False))
    torch.manual_seed(0)
    first = [train[0]["image"] for _ in range(6)]
    torch.manual_seed(0)
    again = [train[0]["image"] for _ in range(6)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))  # reproducible under the engine's seeding
    assert len({a.sum().item() for a in first}) > 1  # and not the same crop every time
    assert train.random_crop and not VolumeDataset(manifest, SMALL.replace(train_crop="center"), train=True).random_crop
    evaluation = VolumeDataset(manifest, SMALL)
    assert torch.equal(evaluation[0]["image"], evaluation[0]["image"])


def test_a_volume_smaller_than_the_crop_is_padded(tmp_path):
    manifest = _manifest(tmp_path, n=1, shape=(2, 3, 3))
    for train in (False, True):
        image = VolumeDataset(manifest, SMALL, train=train)[0]["image"]
        assert image.shape == (1, 4, 8, 8) and (image == -1.0).sum() >= image.numel() - 18


def test_augment_acts_on_the_normalised_crop_reproducibly(tmp_path):
    manifest = _manifest(tmp_path, n=1)
    ds = VolumeDataset(manifest, SMALL, train=False, augment=volume_augment(flip=1.0, intensity=0.0))
    plain = VolumeDataset(manifest, SMALL)[0]["image"]
    assert torch.equal(ds[0]["image"], plain.flip(-1))


def test_2d_images_and_volumes_given_to_the_wrong_tower_fail_in_one_line(tmp_path):
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "xray.png")
    pd.DataFrame([{"path": "xray.png", "patient_id": "p0"}]).to_csv(tmp_path / "flat.csv", index=False)
    with pytest.raises(BadInputError) as err:
        VolumeDataset(load_manifest(tmp_path / "flat.csv"), SMALL)[0]
    assert "xray.png: is a 2-D PNG image, but this model takes 3-D volumes" in str(err.value)
    assert "\n" not in str(err.value)
    volumes = _manifest(tmp_path, n=1)
    with pytest.raises(BadInputError) as err:
        ImageDataset(volumes, PRESETS["cxr-medpeft"])[0]
    assert "v0.nii.gz: is a 3-D volume, but this model takes 2-D images" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="VolumeDataset"):
        ImageDataset(volumes, SMALL)


def test_shared_ct_mri_and_dicom_series_go_through(shared_data, tmp_path):
    folder = shared_data / "volumes"
    rows = [{"path": str(folder / name), "patient_id": f"p{k}", "finding": k % 2}
            for k, name in enumerate(("example_ct_sm.nii.gz", "example_mr_sm.nii.gz", "example_ct_dicom"))]
    pd.DataFrame(rows).to_csv(tmp_path / "shared.csv", index=False)
    manifest = load_manifest(tmp_path / "shared.csv")
    coarse = get_contract("ct-chest").replace(size=[8, 24, 24], pad_size=[10, 32, 32], spacing=[6.0, 6.0, 6.0])
    store = build_cache(manifest, coarse, tmp_path / "cache", progress=False, workers=1)
    ds = VolumeDataset(manifest, coarse, cache=store)
    images = [ds[i]["image"] for i in range(3)]
    assert all(x.shape == (1, 8, 24, 24) and torch.isfinite(x).all() for x in images)
    dicom = images[2][0]
    assert (dicom > -1).float().mean() > 0.1 and (dicom < -0.9).float().mean() > 0.1  # body and air, windowed
    mri = get_contract("mri").replace(size=[8, 24, 24], pad_size=[10, 32, 32])
    z = VolumeDataset(manifest.subset(np.array([False, True, False])), mri)[0]["image"]
    assert z.shape == (1, 8, 24, 24) and z.dtype == torch.float32 and torch.isfinite(z).all()


def test_crops_in_dataloader_workers_follow_the_loader_seed(tmp_path):
    from torch.utils.data import DataLoader

    manifest = _manifest(tmp_path, n=1)
    ds = VolumeDataset(manifest, SMALL, train=True, cache=build_cache(manifest, SMALL, tmp_path / "c", progress=False))
    many = torch.utils.data.ConcatDataset([ds] * 8)

    def epoch(seed):
        loader = DataLoader(many, batch_size=2, num_workers=2, generator=torch.Generator().manual_seed(seed))
        return torch.cat([batch["image"] for batch in loader])

    first, again, other = epoch(5), epoch(5), epoch(6)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert len({x.sum().item() for x in first}) > 2  # the two workers do not repeat each other's crops
