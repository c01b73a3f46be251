"""The preprocessing contract: serialisation, compatibility checks and the pixel pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from greenfm.data.contract import (
    PIXEL_FIELDS,
    PRESETS,
    Contract,
    ContractMismatchError,
    check_compatible,
    check_first_batch,
    get_contract,
    normalize,
    to_contract,
)
from greenfm.errors import BadInputError, ConfigError, GreenfmError


def test_round_trip_through_json_keeps_contract_and_fingerprint():
    for name, contract in PRESETS.items():
        back = Contract.from_dict(json.loads(json.dumps(contract.to_dict())))
        assert back == contract, name
        assert back.fingerprint == contract.fingerprint
        assert hash(back) == hash(contract)
    with pytest.raises(ConfigError, match="2 windows give 2 channels"):
        Contract.from_dict({"windows": [(40, 400), (-600, 1500)], "channels": 1, "mean": 0.5, "std": 0.5})
    ct = Contract(modality="ct", bit_depth=16, windows=[(40, 400)], channels=1, mean=0.5, std=0.5)
    assert Contract.from_dict(json.loads(ct.to_json())) == ct


def test_presets_match_the_methods():
    rfg = PRESETS["rfg"]
    assert (rfg.modality, rfg.size, rfg.resize) == ("fundus", (392, 392), "squash")
    assert rfg.mean == (0.5,) * 3 and rfg.std == (0.5,) * 3
    assert rfg.antialias
    cxr = PRESETS["cxr-medpeft"]
    assert cxr.mean == (0.4978,) * 3 and cxr.std == (0.2449,) * 3 and cxr.channels == 3 and cxr.stored_channels == 1
    assert set(PRESETS) >= {"rfg", "imagenet", "cxr-medpeft", "clip"}


def test_fingerprint_changes_with_any_field_but_pixel_fingerprint_ignores_mean_std():
    rfg = PRESETS["rfg"]
    assert rfg.replace(size=224).fingerprint != rfg.fingerprint
    other_norm = rfg.replace(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    assert other_norm.fingerprint != rfg.fingerprint
    assert other_norm.pixel_fingerprint == rfg.pixel_fingerprint
    assert rfg.replace(interpolation="bicubic").pixel_fingerprint != rfg.pixel_fingerprint


def test_mismatch_names_every_differing_field_on_one_line():
    with pytest.raises(ContractMismatchError) as err:
        check_compatible(PRESETS["rfg"], PRESETS["rfg"].replace(size=224, mean=0.4), "checkpoint run/last.ckpt")
    message = str(err.value)
    assert isinstance(err.value, GreenfmError) and "\n" not in message
    assert message.startswith("checkpoint run/last.ckpt: ")
    assert "size (224, 224) (expected (392, 392))" in message and "mean" in message
    assert "std" not in message and "modality" not in message
    # a dict (as stored in a checkpoint) compares like a Contract; tiny float noise is no difference
    check_compatible(PRESETS["rfg"], PRESETS["rfg"].to_dict() | {"mean": [0.5000000001] * 3}, "export")
    check_compatible(PRESETS["rfg"], PRESETS["rfg"].replace(mean=0.2), "cache", fields=PIXEL_FIELDS)


def test_bad_contract_and_unknown_preset_are_one_line_errors():
    with pytest.raises(ConfigError, match="mean has 2 values for 1 channel"):
        Contract.from_dict({"channels": 1, "mean": [0.1, 0.2], "std": 0.2}, source="c.json")
    with pytest.raises(ConfigError, match="rfg, imagenet"):
        get_contract("rgf")
    assert get_contract("rfg", size=224).size == (224, 224)


def test_contract_json_file_is_accepted(tmp_path):
    path = tmp_path / "contract.json"
    path.write_text(json.dumps({"contract": PRESETS["clip"].to_dict()}))
    assert get_contract(path) == PRESETS["clip"]
    path.write_text("{not json")
    with pytest.raises(BadInputError, match="contract.json"):
        get_contract(path)


@pytest.mark.parametrize("rule", ["squash", "shorter-center-crop", "letterbox"])
def test_resize_rules_give_the_contract_size(rule):
    image = np.full((60, 120), 200, dtype=np.uint8)
    out = to_contract(image, Contract(modality="xray", size=32, resize=rule))
    assert out.shape == (1, 32, 32) and out.dtype == np.uint8
    if rule == "letterbox":  # 60x120 fits as 16x32, centred, black above and below
        assert (out[0, :8] == 0).all() and (out[0, -8:] == 0).all() and (out[0, 12:20] == 200).all()
    else:
        assert (out == 200).all()


def test_shorter_center_crop_keeps_the_middle():
    image = np.zeros((40, 80), dtype=np.uint8)
    image[:, 20:60] = 255  # the central square is white, the sides black
    out = to_contract(image, Contract(modality="xray", size=20, resize="shorter-center-crop", antialias=False))
    assert (out[0, :, 2:-2] == 255).all()


def test_channels_grey_repeated_rgb_to_luma_and_alpha_dropped():
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8)
    photo = Contract(modality="photo", size=8)
    out = to_contract(grey, photo)
    assert out.shape == (3, 8, 8) and (out[0] == grey).all() and (out[2] == grey).all()
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 1] = 100
    rgba[..., 3] = 7
    assert (to_contract(rgba, photo)[1] == 100).all() and (to_contract(rgba, photo)[0] == 0).all()
    xray = to_contract(rgba, Contract(modality="xray", size=8))
    assert xray.shape == (1, 8, 8) and (xray == round(0.587 * 100)).all()
    x = normalize(xray, PRESETS["cxr-medpeft"])
    assert x.shape == (3, 8, 8) and x.dtype == torch.float32
    assert torch.allclose(x[0], torch.full((8, 8), (59 / 255 - 0.4978) / 0.2449))


def test_ct_windows_in_hounsfield_units_become_channels():
    hu = np.array([[-1000, -160, 40], [240, 1000, 40]], dtype=np.int16)
    contract = Contract(modality="ct", bit_depth=8, windows=[(40, 400), (-600, 1500), (400, 1800)], size=(2, 3))
    out = to_contract(hu, contract)
    assert out.shape == (3, 2, 3)
    assert out[0].tolist() == [[0, 0, 128], [255, 255, 128]]  # soft tissue: -160..240 HU
    assert out[1, 0, 0] == round(350 / 1500 * 255)  # lung window starts at -1350 HU


def test_uint16_keeps_precision_and_honours_bits_stored():
    image = np.array([[0, 1000, 4095, 65535]], dtype=np.uint16)
    sixteen = Contract(modality="xray", bit_depth=16, size=(1, 4))
    assert to_contract(image, sixteen).tolist() == [[[0, 1000, 4095, 65535]]]
    twelve = to_contract(image[:, :3], sixteen.replace(size=(1, 3)), bits_stored=12)
    assert twelve.dtype == np.uint16 and twelve.tolist() == [[[0, round(1000 / 4095 * 65535), 65535]]]
    x = normalize(to_contract(image, sixteen), sixteen)
    assert x.dtype == torch.float32 and torch.allclose(x[0, 0, -1], torch.tensor(1.0))


def test_eight_bit_fast_path_agrees_with_the_float_path():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (90, 60, 3), dtype=np.uint8)
    for contract in (PRESETS["rfg"].replace(size=40), PRESETS["cxr-medpeft"].replace(size=32, resize="letterbox")):
        fast = to_contract(image[..., 0] if contract.modality == "xray" else image, contract).astype(int)
        wide = (image.astype(np.uint16) * 257)[..., 0] if contract.modality == "xray" else image.astype(np.uint16) * 257
        slow = to_contract(wide, contract).astype(int)  # 16-bit input takes the float32 path
        assert fast.shape == slow.shape and np.abs(fast - slow).max() <= 1


def test_float_and_signed_images_are_scaled_per_image():
    ramp = np.linspace(-3, 5, 9, dtype=np.float32).reshape(3, 3)
    out = to_contract(ramp, Contract(modality="mri", size=3))
    assert out.min() == 0 and out.max() == 255
    with pytest.raises(BadInputError, match="scan.nii"):
        to_contract(np.zeros((2, 2, 5)), PRESETS["rfg"], source="scan.nii")


def test_first_batch_check_warns_on_unscaled_or_unnormalised_input():
    contract = PRESETS["imagenet"]
    pixels = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    with pytest.warns(UserWarning, match="unscaled"):
        check_first_batch(pixels.float(), contract)
    with pytest.warns(UserWarning, match=r"within \[0, 1\]"):
        check_first_batch(pixels.float() / 255, contract)
    assert check_first_batch(normalize(pixels, contract), contract) is None
