"""DICOM: modality and VOI transforms, MONOCHROME1, multi-frame, bad files (pydicom's own test files)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut

from greenfm.data.readers import probe, read_image, read_volume
from greenfm.errors import BadInputError

TEST_FILES = Path(get_testdata_file("CT_small.dcm")).parent
MONOCHROME1 = TEST_FILES / "dicomdirtests" / "77654033" / "CR1" / "6154"


def _one_line(err: pytest.ExceptionInfo, path) -> str:
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    return str(err.value)


def test_ct_comes_out_in_hounsfield_units():
    path = TEST_FILES / "CT_small.dcm"
    ds = pydicom.dcmread(path)
    assert (ds.RescaleSlope, ds.RescaleIntercept) == (1, -1024)
    image = read_image(path)
    assert image.array.dtype == np.int16  # whole slope and intercept: HU stay integers
    np.testing.assert_array_equal(image.array, apply_modality_lut(ds.pixel_array, ds))
    assert image.metadata["modality"] == "CT" and image.metadata["rescaled"]
    assert image.spacing == pytest.approx((0.661468, 0.661468))


def test_mr_keeps_its_stored_type():
    path = TEST_FILES / "MR_small.dcm"
    image = read_image(path)
    np.testing.assert_array_equal(image.array, pydicom.dcmread(path).pixel_array)
    assert image.array.dtype == np.int16 and not image.metadata["rescaled"]


def test_windows_give_unit_range():
    ct = TEST_FILES / "CT_small.dcm"
    hu = read_image(ct).array.astype(np.float32)
    windowed = read_image(ct, window=(40, 400)).array
    assert windowed.dtype == np.float32 and windowed.min() == 0.0 and windowed.max() == 1.0
    np.testing.assert_allclose(windowed, np.clip((hu + 160) / 400, 0, 1), atol=1e-6)
    own = read_image(TEST_FILES / "MR_small.dcm", window="dicom")  # the file's Window Center/Width
    assert own.array.dtype == np.float32 and 0.0 <= own.array.min() < own.array.max() <= 1.0
    assert own.metadata["window"] == "dicom" and own.bits_stored is None
    with pytest.raises(BadInputError, match="no VOI LUT or window"):
        read_image(ct, window="dicom")


def test_monochrome1_is_inverted():
    ds = pydicom.dcmread(MONOCHROME1)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    image = read_image(MONOCHROME1)
    assert image.photometric == "MONOCHROME2" and image.metadata["stored_photometric"] == "MONOCHROME1"
    modality = apply_modality_lut(ds.pixel_array, ds)
    total = image.array.astype(np.float64) + modality  # inverted within the range the stored bits reach
    np.testing.assert_allclose(total, total.flat[0], rtol=1e-6)
    windowed = read_image(MONOCHROME1, window="dicom").array
    assert np.corrcoef(windowed.ravel(), modality.ravel())[0, 1] < -0.99  # bright stays bright after inversion


def test_multi_frame_needs_a_frame_or_read_volume():
    path = TEST_FILES / "rtdose.dcm"
    with pytest.raises(BadInputError, match="15 frames") as err:
        read_image(path)
    _one_line(err, path)
    frames = pydicom.dcmread(path).pixel_array
    np.testing.assert_array_equal(read_image(path, frame=3).array, frames[3])
    volume = read_volume(path)
    assert volume.shape == (15, 10, 10)
    assert volume.spacing[1:] == pytest.approx(tuple(float(v) for v in pydicom.dcmread(path).PixelSpacing))
    colour = read_image(TEST_FILES / "SC_rgb_rle_2frame.dcm", frame=1)
    assert colour.array.shape == (100, 100, 3) and colour.photometric == "RGB"


@pytest.mark.parametrize(
    "name,reason",
    [
        ("MR_truncated.dcm", "truncated"),
        ("rtplan.dcm", "no pixel data"),
        ("MR_small_jpeg_ls_lossless.dcm", "needs a decoder"),
    ],
)
def test_bad_dicom_files(name, reason):
    path = TEST_FILES / name
    for check in (probe, read_image):
        with pytest.raises(BadInputError, match=reason) as err:
            check(path)
        _one_line(err, path)


def test_truncated_copy_and_garbage_with_dicom_extension(tmp_path):
    cut = tmp_path / "cut.dcm"
    cut.write_bytes((TEST_FILES / "CT_small.dcm").read_bytes()[:20000])
    with pytest.raises(BadInputError, match="truncated"):
        probe(cut)
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(BadInputError) as err:
        probe(junk)
    _one_line(err, junk)


def test_file_without_preamble_is_read_by_extension(tmp_path):
    ds = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    bare = tmp_path / "bare.dcm"
    ds.save_as(bare, enforce_file_format=False)
    bare.write_bytes(bare.read_bytes()[132:] if bare.read_bytes()[128:132] == b"DICM" else bare.read_bytes())
    np.testing.assert_array_equal(read_image(bare).array, read_image(TEST_FILES / "CT_small.dcm").array)


def test_mixed_series_in_one_folder_are_grouped(tmp_path):
    from greenfm.data.dicom_series import find_series

    source = TEST_FILES / "dicomdirtests" / "77654033" / "CT2"
    for f in source.iterdir():
        shutil.copy(f, tmp_path / f"ct_{f.name}")
    shutil.copy(TEST_FILES / "MR_small.dcm", tmp_path / "mr.dcm")
    shutil.copy(TEST_FILES / "rtplan.dcm", tmp_path / "plan.dcm")  # no pixels: skipped, not an error
    (tmp_path / "README.txt").write_text("not DICOM")
    series = find_series(tmp_path)
    assert sorted(len(s.files) for s in series) == [1, 4]
    with pytest.raises(BadInputError, match="holds 2 series") as err:
        read_volume(tmp_path)
    _one_line(err, tmp_path)
    ct = next(s for s in series if len(s.files) == 4)
    volume = read_volume(tmp_path, series_uid=ct.uid)
    assert volume.shape == (4, 16, 16) and volume.array.dtype == np.int16


def test_series_sorted_by_position_not_file_name(tmp_path, shared_data):
    source = shared_data / "volumes" / "example_ct_dicom"
    files = sorted(source.iterdir())[:6]
    for i, f in enumerate(files):  # names now run against the slice order
        shutil.copy(f, tmp_path / f"slice_{len(files) - i:02d}.dcm")
    volume = read_volume(tmp_path)
    positions = [float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in files]
    first = np.argmin(positions)  # the slice along +normal (superior) comes first
    np.testing.assert_array_equal(volume.array[0], read_image(files[first]).array)
    assert volume.metadata["sorted_by"] == "position"


def test_inconsistent_slice_sizes_and_bad_slice(tmp_path):
    source = TEST_FILES / "dicomdirtests" / "77654033" / "CT2"
    for f in source.iterdir():
        shutil.copy(f, tmp_path / f.name)
    odd = sorted(tmp_path.iterdir())[0]
    ds = pydicom.dcmread(odd)
    ds.PixelData = ds.pixel_array[:8].tobytes()
    ds.Rows = 8
    ds.save_as(odd)
    with pytest.raises(BadInputError, match="slice is 8x16 but the series. other slices are 16x16") as err:
        read_volume(tmp_path)
    _one_line(err, odd)
    odd.write_bytes(odd.read_bytes()[:400])  # now truncated: named, never silently dropped
    with pytest.raises(BadInputError) as err:
        read_volume(tmp_path)
    _one_line(err, odd)
