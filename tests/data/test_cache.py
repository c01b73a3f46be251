"""The decode-once cache: layout, keys, rebuilds, interrupted builds, bit depths, bad images."""

from __future__ import annotations

import json
import os
import pickle
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import greenfm.data.cache as cache_module
from greenfm.data.cache import BUILDING_PREFIX, build_cache, cache_key, open_cache
from greenfm.data.contract import PRESETS, Contract, to_contract
from greenfm.data.dataset import ImageDataset
from greenfm.data.manifest import load_manifest
from greenfm.errors import BadInputError, ConfigError

CXR = PRESETS["cxr-medpeft"].replace(size=16)


def make_manifest(folder: Path, n: int = 8, *, sixteen_bit: bool = False, label_of_first: int = 1):
    rng = np.random.default_rng(len(str(folder)))
    (folder / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        array = rng.integers(0, 65536 if sixteen_bit else 256, (20, 30), dtype=np.uint16 if sixteen_bit else np.uint8)
        Image.fromarray(array).save(folder / "img" / f"{i}.png")
        rows.append({"path": f"img/{i}.png", "patient_id": f"p{i // 2}", "finding": label_of_first if i == 0 else 0})
    pd.DataFrame(rows).to_csv(folder / "m.csv", index=False)
    return load_manifest(folder / "m.csv")


def forbid_decoding(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the cache should have been reused, not rebuilt")

    monkeypatch.setattr(cache_module, "decode_to_contract", fail)


def test_build_writes_pixels_index_and_meta(tmp_path):
    manifest = make_manifest(tmp_path)
    store = build_cache(manifest, CXR, tmp_path / "cache", progress=False)
    assert store.path == tmp_path / "cache" / cache_key(manifest, CXR)
    assert store.pixels.shape == (8, 1, 16, 16) and store.pixels.dtype == np.uint8
    assert len(store) == 8 and store[3].shape == (1, 16, 16) and isinstance(store[3], np.ndarray)
    meta = json.loads((store.path / "meta.json").read_text())
    assert meta["complete"] and meta["manifest_hash"] == manifest.hash and meta["n_skipped"] == 0
    assert Contract.from_dict(meta["contract"]) == CXR
    assert store.paths == manifest.table["path"].tolist()
    assert np.array_equal(store[5], to_contract(np.asarray(Image.open(store.paths[5])), CXR))
    assert len(pickle.dumps(store)) < 10_000  # DataLoader workers re-open the memmap


def test_existing_cache_is_reused_without_decoding(tmp_path, monkeypatch):
    manifest = make_manifest(tmp_path)
    first = build_cache(manifest, CXR, tmp_path / "cache", progress=False)
    forbid_decoding(monkeypatch)
    assert build_cache(manifest, CXR, tmp_path / "cache", progress=False).path == first.path
    # mean/std are applied when reading, so another normalisation shares the cache
    assert build_cache(manifest, CXR.replace(mean=0.5, std=0.25), tmp_path / "cache", progress=False).path == first.path
    assert open_cache(tmp_path / "cache", manifest=manifest, contract=CXR).path == first.path


def test_changed_manifest_or_contract_builds_a_new_cache(tmp_path):
    root = tmp_path / "cache"
    manifest = make_manifest(tmp_path / "a")
    first = build_cache(manifest, CXR, root, progress=False)
    relabelled = make_manifest(tmp_path / "a", label_of_first=0)
    assert relabelled.hash != manifest.hash
    second = build_cache(relabelled, CXR, root, progress=False)
    third = build_cache(manifest, CXR.replace(size=12), root, progress=False)
    assert len({first.path, second.path, third.path}) == 3
    assert third.pixels.shape == (8, 1, 12, 12)
    with pytest.raises(BadInputError, match="another manifest"):
        open_cache(first.path, manifest=relabelled)
    with pytest.raises(ConfigError, match=r"size \(16, 16\) \(expected \(12, 12\)\)"):
        open_cache(first.path, contract=CXR.replace(size=12))


def test_forced_rebuild_replaces_in_place(tmp_path):
    manifest = make_manifest(tmp_path)
    first = build_cache(manifest, CXR, tmp_path / "cache", progress=False)
    (first.path / "marker").touch()
    again = build_cache(manifest, CXR, tmp_path / "cache", progress=False, force=True)
    assert again.path == first.path and not (again.path / "marker").exists()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [first.path.name]


def test_failed_build_leaves_nothing_usable(tmp_path, monkeypatch):
    manifest = make_manifest(tmp_path)
    calls = {"n": 0}
    real = cache_module.decode_to_contract

    def crash_after_three(path, contract):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        return real(path, contract)

    monkeypatch.setattr(cache_module, "decode_to_contract", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        build_cache(manifest, CXR, tmp_path / "cache", progress=False, workers=1)
    assert list((tmp_path / "cache").iterdir()) == []
    assert open_cache(tmp_path / "cache", manifest=manifest, contract=CXR, missing_ok=True) is None
    with pytest.raises(BadInputError, match="no complete cache"):
        open_cache(tmp_path / "cache", manifest=manifest, contract=CXR)


def test_killed_build_is_never_used_and_is_cleaned_up(tmp_path):
    """A build killed with SIGKILL halfway leaves a temporary folder that nothing opens."""
    manifest = make_manifest(tmp_path, n=40)
    root = tmp_path / "cache"
    pid = os.fork()
    if pid == 0:  # child: a slow build, killed below
        try:
            real = cache_module.decode_to_contract

            def slow(path, contract):
                time.sleep(0.05)
                return real(path, contract)

            cache_module.decode_to_contract = slow
            build_cache(manifest, CXR, root, progress=False, workers=1)
        finally:
            os._exit(0)
    deadline = time.monotonic() + 30
    while not list(root.glob(f"{BUILDING_PREFIX}*/pixels.npy")) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    leftovers = list(root.glob(f"{BUILDING_PREFIX}*"))
    assert len(leftovers) == 1 and not (root / cache_key(manifest, CXR)).exists()
    assert open_cache(root, manifest=manifest, contract=CXR, missing_ok=True) is None
    store = build_cache(manifest, CXR, root, progress=False)
    assert len(store) == 40 and not leftovers[0].exists()


def test_incomplete_folder_in_place_is_rebuilt(tmp_path):
    manifest = make_manifest(tmp_path)
    store = build_cache(manifest, CXR, tmp_path / "cache", progress=False)
    (store.path / "meta.json").unlink()  # e.g. a copy that stopped halfway
    assert open_cache(store.path, missing_ok=True) is None
    rebuilt = build_cache(manifest, CXR, tmp_path / "cache", progress=False)
    assert rebuilt.path == store.path and (store.path / "meta.json").exists()


def test_uint16_contract_keeps_sixteen_bits(tmp_path):
    manifest = make_manifest(tmp_path, sixteen_bit=True)
    contract = Contract(modality="xray", bit_depth=16, size=16, mean=0.5, std=0.5)
    store = build_cache(manifest, contract, tmp_path / "cache", progress=False)
    assert store.pixels.dtype == np.uint16 and store.pixels.max() > 255
    expected = to_contract(np.asarray(Image.open(store.paths[0])), contract)
    assert np.array_equal(store[0], expected)
    eight = build_cache(manifest, contract.replace(bit_depth=8), tmp_path / "cache", progress=False)
    assert eight.path != store.path and eight.pixels.dtype == np.uint8


def test_bad_images_stop_the_build_or_are_skipped_and_counted(tmp_path):
    make_manifest(tmp_path)
    bad = tmp_path / "img" / "3.png"
    bad.write_bytes(bad.read_bytes()[:70])
    manifest = load_manifest(tmp_path / "m.csv", check_files=False)
    with pytest.raises(BadInputError, match=r"1 of 8 images cannot be decoded: .*3\.png"):
        build_cache(manifest, CXR, tmp_path / "cache", progress=False)
    store = build_cache(manifest, CXR, tmp_path / "cache", progress=False, skip_bad=True)
    assert len(store) == 7 and store.meta["n_skipped"] == 1 and store.meta["skipped"][0]["path"].endswith("3.png")
    ds = ImageDataset(manifest, CXR, cache=store)
    assert len(ds) == 7 and str(bad) not in ds.paths.tolist()


def test_process_pool_build_equals_in_process_build(tmp_path, monkeypatch):
    manifest = make_manifest(tmp_path, n=10)
    serial = build_cache(manifest, CXR, tmp_path / "one", progress=False, workers=1)
    monkeypatch.setattr(cache_module, "_MIN_IMAGES_FOR_POOL", 0)
    monkeypatch.setattr(cache_module, "_CHUNK", 3)
    pooled = build_cache(manifest, CXR, tmp_path / "two", progress=False, workers=2)
    assert pooled.meta["workers"] == 2
    assert np.array_equal(np.asarray(serial.pixels), np.asarray(pooled.pixels))
