"""Volume contracts: one ``Contract`` for 2-D and 3-D, METHODS 3.6-3.7 presets, 2-D fingerprints unchanged."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from greenfm.data.contract import PIXEL_FIELDS, PRESETS, Contract, check_compatible, get_contract, normalize
from greenfm.errors import ConfigError

# Fingerprints of the 2-D presets before volume fields existed: caches and checkpoints depend on them.
FINGERPRINTS_2D = {
    "rfg": ("4dd331f701b81e79", "8d6b5768e85abf77"),
    "imagenet": ("2d3d644f76171168", "29faf349620723d8"),
    "cxr-medpeft": ("b5f71cad14d845bd", "f7d96a04595b80df"),
    "clip": ("8a29746d39e64083", "29faf349620723d8"),
}


def test_2d_contracts_keep_their_fingerprints_and_dicts():
    for name, (full, pixels) in FINGERPRINTS_2D.items():
        contract = PRESETS[name]
        assert (contract.fingerprint, contract.pixel_fingerprint) == (full, pixels), name
        assert not contract.is_volume and contract.ndim == 2
        assert "pad_size" not in contract.to_dict() and "spacing" not in contract.pixel_dict()


def test_ct_and_mri_presets_follow_methods():
    chest, abdomen, mri = PRESETS["ct-chest"], PRESETS["ct-abdomen"], PRESETS["mri"]
    assert chest.is_volume and chest.size == (96, 192, 192) and chest.stored_size == (120, 240, 240)
    assert chest.spacing == (3.0, 1.5, 1.5) and chest.orientation == "SPL" and chest.pad_value == -1.0
    assert abdomen.size == (144, 224, 224) and abdomen.pad_size == (180, 280, 280)
    # HU -> model input: chest (HU + 400) / 600, abdomen HU / 1000, both clipped to [-1, 1]
    for contract, hu, expected in ((chest, [-1000, -400, 200], [-1, 0, 1]), (abdomen, [-1000, 0, 500], [-1, 0, 0.5])):
        (centre, width), = contract.windows
        unit = np.clip((np.asarray(hu, float) - (centre - width / 2)) / width, 0, 1)
        stored = torch.as_tensor(np.round(unit * contract.max_value).astype(np.int32)).view(1, 1, 1, 3)
        np.testing.assert_allclose(normalize(stored, contract).ravel(), expected, atol=2e-5)
    assert chest.dtype == np.uint16 and chest.stored_pad_value == 0.0  # -1 after normalisation
    assert mri.intensity == "percentile-zscore" and mri.dtype == np.float16 and mri.windows is None
    assert mri.size == (20, 192, 192) and mri.stored_size == (24, 240, 240) and mri.spacing is None


def test_volume_fields_are_validated_in_one_line():
    with pytest.raises(ConfigError, match="apply to volumes only"):
        PRESETS["rfg"].replace(pad_size=[8, 8, 8])
    with pytest.raises(ConfigError, match="pad_size .* smaller than size"):
        PRESETS["ct-chest"].replace(pad_size=[10, 10, 10])
    with pytest.raises(ConfigError, match="windows .* or intensity"):
        Contract.from_dict({"modality": "ct", "channels": 1, "mean": 0.5, "std": 0.5, "size": [8, 8, 8]})
    with pytest.raises(ConfigError, match="orientation"):
        PRESETS["ct-chest"].replace(orientation="SSP")
    with pytest.raises(ConfigError, match="exclude each other"):
        PRESETS["mri"].replace(windows=[[0, 100]])


def test_a_json_file_overrides_a_preset(tmp_path):
    path = tmp_path / "small.json"
    path.write_text(json.dumps({"preset": "ct-chest", "size": [8, 16, 16], "pad_size": [10, 20, 20]}))
    small = get_contract(path)
    assert small.size == (8, 16, 16) and small.stored_size == (10, 20, 20)
    assert small.windows == PRESETS["ct-chest"].windows and small.spacing == (3.0, 1.5, 1.5)
    assert small.pixel_fingerprint != PRESETS["ct-chest"].pixel_fingerprint
    (tmp_path / "bad.json").write_text(json.dumps({"preset": "ct-knee"}))
    with pytest.raises(ConfigError, match="unknown preset 'ct-knee'"):
        get_contract(tmp_path / "bad.json")
    assert get_contract("ct-abdomen") is PRESETS["ct-abdomen"]
    with pytest.raises(ConfigError, match=r"volume contract: give its size \(D, H, W\) in a contract file"):
        get_contract("ct-chest", size=64)


def test_pad_value_and_mean_std_decide_the_stored_padding():
    chest = PRESETS["ct-chest"]
    other = chest.replace(pad_value=0.0)  # pads with air-to-window midpoint instead of -1
    assert other.stored_pad_value == 0.5 and other.pixel_fingerprint != chest.pixel_fingerprint
    with pytest.raises(ConfigError, match="pad_value"):
        check_compatible(chest, other, "cache", fields=PIXEL_FIELDS)
    assert chest.replace(mean=0.4, pad_value=-0.8).stored_pad_value == pytest.approx(0.0)


def test_normalize_handles_volumes_and_batches():
    chest = PRESETS["ct-chest"]
    stored = torch.full((2, 1, 3, 4, 5), 65535, dtype=torch.uint16)
    x = normalize(stored, chest)
    assert x.shape == (2, 1, 3, 4, 5) and x.dtype == torch.float32 and torch.allclose(x, torch.ones_like(x))
    three = chest.replace(channels=3, mean=0.5, std=0.5)
    assert normalize(stored[0], three).shape == (3, 3, 4, 5)
    z = torch.tensor([-1.5, 0.0, 2.25], dtype=torch.float16).view(1, 1, 1, 3)
    assert torch.equal(normalize(z, PRESETS["mri"]).ravel(), torch.tensor([-1.5, 0.0, 2.25]))


def test_volume_preset_view_round_trips():
    from greenfm.data.volumes import PRESETS as VOLUME_PRESETS
    from greenfm.data.volumes import get_preset

    for name in ("ct-chest", "ct-abdomen", "mri"):
        assert VOLUME_PRESETS[name].contract.pixel_fingerprint == PRESETS[name].pixel_fingerprint, name
    assert get_preset("ct-chest").hu_range == (-1000.0, 200.0) and get_preset("ct-abdomen").hu_range == (-1000.0, 1000.0)
    assert get_preset("ct-chest", input_scale=1000.0).contract.input_scale == 1000.0
