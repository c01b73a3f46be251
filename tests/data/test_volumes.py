"""3-D volumes: NIfTI / NRRD / DICOM series readers, orientation, and the METHODS 3.7 presets."""

from __future__ import annotations

import os

import nibabel as nib
import nrrd
import numpy as np
import pytest
import torch
from nibabel.testing import data_path

from greenfm.data.readers import probe, read_image, read_volume
from greenfm.data.volume_files import write_nifti
from greenfm.errors import BadInputError, ConfigError

NIBABEL = data_path if isinstance(data_path, str) else str(data_path)


def _one_line(err: pytest.ExceptionInfo, path) -> None:
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_nifti_axes_spacing_and_affine():
    path = os.path.join(NIBABEL, "standard.nii.gz")  # (x, y, z) = (4, 5, 7), zooms (1, 3, 2)
    img = nib.load(path)
    volume = read_volume(path)
    assert volume.shape == (7, 5, 4) and volume.spacing == (2.0, 3.0, 1.0)
    np.testing.assert_array_equal(volume.array, np.asarray(img.dataobj).transpose(2, 1, 0))
    d, h, w = 6, 4, 3  # the same voxel, indexed both ways, sits at the same world point
    np.testing.assert_allclose(volume.affine @ [d, h, w, 1], img.affine @ [w, h, d, 1])
    assert volume.orientation == "SAR"


def test_nifti_big_endian_is_made_native():
    volume = read_volume(os.path.join(NIBABEL, "anatomical.nii"))
    assert volume.array.dtype == np.int16 and volume.array.dtype.isnative and volume.shape == (25, 41, 33)


def test_4d_nifti_is_bad_input():
    path = os.path.join(NIBABEL, "example4d.nii.gz")
    for check in (probe, read_volume):
        with pytest.raises(BadInputError, match="4-D") as err:
            check(path)
        _one_line(err, path)


def test_nifti_with_nan_errors_or_is_filled(tmp_path):
    data = np.ones((4, 5, 6), np.float32)
    data[1, 2, 3] = np.nan
    path = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    with pytest.raises(BadInputError, match="1 NaN") as err:
        read_volume(path)
    _one_line(err, path)
    filled = read_volume(path, nan_fill=-1.0)
    assert filled.array[3, 2, 1] == -1.0 and np.isfinite(filled.array).all()


def test_truncated_and_complex_nifti(tmp_path):
    path = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(np.arange(4000, dtype=np.int16).reshape(10, 20, 20), np.eye(4)), path)
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(BadInputError, match="truncated") as err:
        probe(cut)
    _one_line(err, cut)
    complex_path = tmp_path / "c.nii"
    nib.save(nib.Nifti1Image(np.zeros((3, 3, 3), np.complex64), np.eye(4)), complex_path)
    with pytest.raises(BadInputError, match="complex"):
        probe(complex_path)


def test_single_slice_nifti_reads_as_image(tmp_path):
    path = tmp_path / "slice.nii"
    data = np.arange(12, dtype=np.int16).reshape(4, 3)  # (x, y)
    nib.save(nib.Nifti1Image(data, np.diag([0.5, 0.7, 1.0, 1.0])), path)
    image = read_image(path)
    np.testing.assert_array_equal(image.array, data.T)
    assert image.spacing == pytest.approx((0.7, 0.5))
    with pytest.raises(BadInputError, match="read_volume"):
        read_image(os.path.join(NIBABEL, "standard.nii.gz"))


def test_nrrd_lps_space_becomes_ras(tmp_path):
    data = np.random.default_rng(0).integers(-1000, 1000, (6, 5, 4)).astype(np.int16)  # (x, y, z)
    header = {"space": "left-posterior-superior", "space directions": np.diag([0.8, 0.9, 2.5]), "space origin": [10.0, 20.0, 30.0]}
    path = tmp_path / "v.nrrd"
    nrrd.write(str(path), data, header)
    probe(path)
    volume = read_volume(path)
    assert volume.shape == (4, 5, 6) and volume.spacing == pytest.approx((2.5, 0.9, 0.8))
    np.testing.assert_array_equal(volume.array, data.transpose(2, 1, 0))
    assert volume.orientation == "SPL"
    np.testing.assert_allclose(volume.affine[:3, 3], [-10.0, -20.0, 30.0])


def test_npz_volume_is_display_oriented_and_spacing_can_be_given(tmp_path):
    array = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    np.savez(tmp_path / "v.npz", volume=array, spacing=np.array([3.0, 1.5, 1.25]))
    volume = read_volume(tmp_path / "v.npz")
    np.testing.assert_array_equal(volume.array, array)
    assert volume.orientation == "SPL" and volume.spacing == (3.0, 1.5, 1.25)
    np.save(tmp_path / "bare.npy", array)
    assert not read_volume(tmp_path / "bare.npy").metadata["spacing_known"]
    nifti = read_volume(os.path.join(NIBABEL, "standard.nii.gz"), spacing=(1.0, 1.0, 1.0))
    assert nifti.spacing == (1.0, 1.0, 1.0) and nifti.orientation == "SAR"
    np.testing.assert_allclose(np.linalg.norm(nifti.affine[:3, :3], axis=0), 1.0)


def test_write_nifti_round_trip(tmp_path):
    volume = read_volume(os.path.join(NIBABEL, "standard.nii.gz"))
    again = read_volume(write_nifti(volume, tmp_path / "copy.nii.gz"))
    np.testing.assert_array_equal(again.array, volume.array)
    np.testing.assert_allclose(again.affine, volume.affine)


def test_dicom_series_matches_its_segmentation(shared_data):
    from greenfm.data.volumes import reorient

    ct = read_volume(shared_data / "volumes" / "example_ct_dicom")
    seg = read_volume(shared_data / "volumes" / "example_seg_dicom.nii.gz")
    assert ct.shape == seg.shape == (20, 512, 512)
    assert ct.array.dtype == np.int16 and ct.metadata["slices"] == 20
    assert ct.spacing == pytest.approx(seg.spacing, abs=1e-4)
    air = np.median(ct.array[:, 5:40, 200:300])  # above the patient, inside the field of view
    assert -1030 < air < -970 and ct.array.max() < 3100
    aligned = reorient(seg, ct.orientation)  # the NIfTI stores rows flipped: orientation says so
    np.testing.assert_allclose(aligned.affine, ct.affine, atol=1e-3)
    organs = aligned.array > 0
    assert ct.array[organs].mean() > -150 > ct.array[seg.array > 0].mean()  # aligned organs are tissue


def test_ct_chest_preset_pads_a_small_volume(shared_data):
    from greenfm.data.volumes import VolumeTransform

    volume = read_volume(shared_data / "volumes" / "example_ct_sm.nii.gz")
    assert volume.shape == (30, 101, 122) and volume.array.dtype == np.int16
    x = VolumeTransform("ct-chest")(volume)  # 30 slices at 3 mm < 96: padded, not a crash
    assert x.shape == (1, 96, 192, 192) and x.dtype == torch.float32
    assert x.min() == -1.0 and x.max() <= 1.0
    assert (x[0, 0] == -1.0).all() and (x[0, -1] == -1.0).all()  # slices padded with -1 after scaling
    assert (x[0, 48] > -1.0).any()  # the middle slice holds the scan
    train = VolumeTransform("ct-chest", train=True, seed=3)
    first = train(volume)
    train.set_random_state(3)
    assert first.shape == (1, 96, 192, 192) and torch.equal(first, train(volume))


def test_presets_and_their_formulas():
    from greenfm.data.volumes import PRESETS, get_preset, hu_window, pad_or_crop, percentile_zscore, random_crop

    assert PRESETS["ct-chest"].crop_size == (96, 192, 192) and PRESETS["ct-chest"].pad_size == (120, 240, 240)
    assert PRESETS["ct-abdomen"].crop_size == (144, 224, 224) and PRESETS["ct-abdomen"].pad_size == (180, 280, 280)
    assert PRESETS["mri"].crop_size == (20, 192, 192)
    hu = torch.tensor([-2000.0, -1000.0, -400.0, 0.0, 200.0, 900.0, 1500.0]).reshape(1, 1, 1, 7)
    np.testing.assert_allclose(hu_window(hu, -1000, 200).ravel(), np.clip((hu.ravel() + 400) / 600, -1, 1), atol=1e-6)
    np.testing.assert_allclose(hu_window(hu, -1000, 1000).ravel(), np.clip(hu.ravel() / 1000, -1, 1), atol=1e-6)
    rng = np.random.default_rng(0)
    mr = torch.as_tensor(rng.gamma(2.0, 100.0, (1, 6, 20, 20)).astype(np.float32))
    z = percentile_zscore(mr)
    assert abs(z.mean()) < 1e-4 and abs(z.std() - 1) < 1e-2 and z.max() < (mr.max() - mr.mean()) / mr.std()
    padded = pad_or_crop(torch.zeros(1, 2, 3, 4), (4, 3, 2), value=-1)
    assert padded.shape == (1, 4, 3, 2) and (padded[0, 0] == -1).all()
    a, b = random_crop(mr, (2, 8, 8), seed=0), random_crop(mr, (2, 8, 8), seed=1)
    assert a.shape == (1, 2, 8, 8) and not torch.equal(a, b)
    assert get_preset("ct-chest", input_scale=1000.0).input_scale == 1000.0
    with pytest.raises(ConfigError, match="ct-chest"):
        get_preset("ct-knee")


def test_hu_over_1000_sources_and_mri_preset():
    from greenfm.data.readers import Volume, display_affine
    from greenfm.data.volumes import VolumeTransform

    hu = np.full((8, 16, 16), -400, np.int16)
    scaled = Volume(hu.astype(np.float32) / 1000, (3.0, 1.5, 1.5), display_affine((3.0, 1.5, 1.5)))
    x = VolumeTransform("ct-chest", input_scale=1000.0)(scaled)
    assert torch.allclose(x[0, 48, 96, 96], torch.tensor(0.0), atol=1e-5)  # -400 HU -> 0
    mr = Volume(np.random.default_rng(1).gamma(2.0, 50.0, (10, 30, 30)).astype(np.float32), (3.0, 3.0, 3.0), np.eye(4))
    y = VolumeTransform("mri", train=True, seed=0)(mr)
    assert y.shape == (1, 20, 192, 192) and torch.isfinite(y).all()
