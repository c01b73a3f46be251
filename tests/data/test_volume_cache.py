"""The decode-once cache of volumes: (N, C, D, H, W) at pad_size, keyed and built like the 2-D cache."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from greenfm.data.cache import build_cache, cache_key
from greenfm.data.contract import get_contract
from greenfm.data.image_data import Volume
from greenfm.data.manifest import load_manifest
from greenfm.data.readers import display_affine
from greenfm.data.volume_files import write_nifti
from greenfm.errors import BadInputError

SMALL = get_contract("ct-chest").replace(size=[4, 8, 8], pad_size=[6, 12, 12])  # 3 x 1.5 x 1.5 mm, SPL


def _manifest(tmp_path, arrays, spacing=(3.0, 1.5, 1.5)):
    rows = []
    for n, array in enumerate(arrays):
        path = write_nifti(Volume(array, spacing, display_affine(spacing)), tmp_path / f"v{n}.nii.gz")
        rows.append({"path": path.name, "patient_id": f"p{n}", "id": f"v{n}", "finding": n % 2})
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    return load_manifest(tmp_path / "manifest.csv")


def _hu(shape, value=-400):
    return np.full(shape, value, np.int16)


def test_volumes_are_stored_once_padded_to_pad_size(tmp_path):
    small, large = _hu((3, 6, 6)), _hu((9, 20, 20), 200)  # smaller and larger than pad_size
    manifest = _manifest(tmp_path, [small, large])
    store = build_cache(manifest, SMALL, tmp_path / "cache", progress=False)
    assert store.meta["shape"] == [2, 1, 6, 12, 12] and store.meta["dtype"] == "uint16"
    assert store.path.name == cache_key(manifest, SMALL)
    a, b = store[0], store[1]
    assert a.shape == (1, 6, 12, 12) and a.dtype == np.uint16
    inside = a[0, 1:4, 3:9, 3:9]  # the 3x6x6 volume sits in the middle, padded symmetrically
    assert (inside == 32768).all() and (a == 0).sum() == a.size - inside.size  # -400 HU -> 0.5; pad -1 -> 0
    assert (b == 65535).all()  # 200 HU is the window's top; the large volume is centre-cropped
    mtime = (store.path / "pixels.npy").stat().st_mtime_ns
    again = build_cache(manifest, SMALL, tmp_path / "cache", progress=False)
    assert again.path == store.path and (again.path / "pixels.npy").stat().st_mtime_ns == mtime  # reused


def test_the_key_follows_every_pixel_field(tmp_path):
    manifest = _manifest(tmp_path, [_hu((3, 6, 6))])
    keys = {cache_key(manifest, c) for c in (SMALL, SMALL.replace(pad_size=[6, 12, 14]),
                                              SMALL.replace(spacing=[3.0, 3.0, 3.0]), SMALL.replace(pad_value=0.0),
                                              SMALL.replace(orientation="IPL"), SMALL.replace(size=[4, 8, 10]))}  # fmt: skip
    assert len(keys) == 6
    assert cache_key(manifest, SMALL.replace(mean=0.4, pad_value=-0.8)) == cache_key(manifest, SMALL)  # same pixels


def test_unreadable_volumes_stop_the_build_or_are_skipped_and_counted(tmp_path):
    manifest = _manifest(tmp_path, [_hu((3, 6, 6)), _hu((3, 6, 6)), _hu((3, 6, 6))])
    broken = tmp_path / "v1.nii.gz"
    broken.write_bytes(b"\x1f\x8b" + b"not a volume" * 8)  # broken after the manifest was checked
    with pytest.raises(BadInputError) as err:
        build_cache(manifest, SMALL, tmp_path / "cache", progress=False)
    assert "1 of 3 volumes cannot be decoded" in str(err.value) and str(broken) in str(err.value)
    assert "\n" not in str(err.value) and "--skip-bad" in str(err.value)
    store = build_cache(manifest, SMALL, tmp_path / "cache", progress=False, skip_bad=True)
    assert len(store) == 2 and store.meta["n_skipped"] == 1 and store.skipped_paths == [str(broken)]
    assert not list((tmp_path / "cache").glob(".building-*"))  # the failed build left nothing behind
    from greenfm.data.volume_dataset import VolumeDataset

    dataset = VolumeDataset(manifest, SMALL, cache=store)  # the skipped row is left out, with a warning
    assert len(dataset) == 2 and list(dataset.ids) == ["v0", "v2"] and dataset[1]["image"].shape == (1, 4, 8, 8)


def test_anisotropic_volumes_are_resampled_to_the_contract_spacing(tmp_path):
    manifest = _manifest(tmp_path, [_hu((12, 16, 16))], spacing=(1.0, 0.75, 0.75))
    stored = build_cache(manifest, SMALL, tmp_path / "cache", progress=False)[0]
    filled = np.argwhere(stored[0] > 0)
    extent = filled.max(axis=0) - filled.min(axis=0) + 1
    assert tuple(extent[1:]) == (8, 8) and 4 <= extent[0] <= 5  # 16 x 0.75 mm = 8 x 1.5 mm; 12 mm ~ 4 x 3 mm


def test_mri_z_scores_are_stored_as_float16(tmp_path):
    rng = np.random.default_rng(0)
    mr = rng.gamma(2.0, 100.0, (6, 12, 12)).astype(np.float32)
    contract = get_contract("mri").replace(size=[4, 8, 8], pad_size=[6, 12, 12])
    store = build_cache(_manifest(tmp_path, [mr]), contract, tmp_path / "cache", progress=False)
    z = store[0].astype(np.float32)
    assert store.meta["dtype"] == "float16" and z.shape == (1, 6, 12, 12)
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.02 and z.max() < (mr.max() - mr.mean()) / mr.std()


def test_a_volume_without_spacing_is_taken_as_1_mm_with_a_warning(tmp_path):
    np.save(tmp_path / "bare.npy", _hu((6, 8, 8)))
    pd.DataFrame([{"path": "bare.npy", "patient_id": "p0"}]).to_csv(tmp_path / "m.csv", index=False)
    with pytest.warns(UserWarning, match=r"bare\.npy: no voxel spacing stored; taken as 1 mm"):
        store = build_cache(load_manifest(tmp_path / "m.csv"), SMALL, tmp_path / "cache", progress=False, workers=1)
    filled = np.argwhere(store[0][0] > 0)
    extent = filled.max(axis=0) - filled.min(axis=0) + 1
    assert extent[0] <= 3 and 5 <= extent[1] <= 6  # 6 x 1 mm -> ~2 x 3 mm, 8 x 1 mm -> ~5 x 1.5 mm
