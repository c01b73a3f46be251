"""Headers that lie: NIfTI fields ``data check`` must catch, non-DICOM bytes named as such,
and importers that count every file they leave out."""

from __future__ import annotations

import gzip
import struct

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from greenfm.data.importers import import_source
from greenfm.data.manifest import load_manifest
from greenfm.data.readers import probe, read_image, read_volume
from greenfm.errors import BadInputError


def _nifti(tmp_path, name="v.nii", version=1):
    path = tmp_path / name
    image = (nib.Nifti1Image if version == 1 else nib.Nifti2Image)(np.arange(24, dtype=np.int16).reshape(2, 3, 4), np.eye(4))
    nib.save(image, str(path))
    return path


def _patch(path, offset, fmt, *values):
    raw = bytearray(gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes())
    raw[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, *values)
    path.write_bytes(gzip.compress(bytes(raw)) if path.name.endswith(".gz") else bytes(raw))
    return path


def _refused(path, *expected):
    for check in (probe, read_volume):
        with pytest.raises(BadInputError) as err:
            check(path)
        message = str(err.value)
        assert "\n" not in message and str(path) in message
        for text in expected:
            assert text in message, message


@pytest.mark.parametrize("name", ["v.nii", "v.nii.gz"])
def test_valid_nifti_passes(tmp_path, name):
    path = _nifti(tmp_path, name)
    probe(path)
    assert read_volume(path).shape == (4, 3, 2)


@pytest.mark.parametrize("name", ["v.nii", "v.nii.gz"])
def test_wrong_sizeof_hdr_is_refused(tmp_path, name):
    path = _patch(_nifti(tmp_path, name), 0, "<i", 350)
    _refused(path, "NIfTI sizeof_hdr is 350, not 348 (NIfTI-1) or 540 (NIfTI-2)")


def test_nifti2_sizeof_hdr_must_be_540(tmp_path):
    probe(_nifti(tmp_path, "v2.nii", version=2))
    path = _patch(_nifti(tmp_path, "v2.nii", version=2), 0, "<i", 348)
    _refused(path)


def test_vox_offset_past_the_end_is_refused(tmp_path):
    path = _patch(_nifti(tmp_path), 108, "<f", 10_000.0)
    _refused(path, "vox_offset 10000 is past the end of the file")


def test_vox_offset_inside_the_header_is_refused(tmp_path):
    path = _patch(_nifti(tmp_path), 108, "<f", 100.0)
    _refused(path, "vox offset 100 too low")  # nibabel's own check, as one line


@pytest.mark.parametrize(("dims", "expected"), [((0, 2, 3, 4), "dim[0] is 0"), ((3, 2, 0, 4), "must all be at least 1"),
                                                ((3, 2, -3, 4), "must all be at least 1"), ((9, 2, 3, 4), "NIfTI")])
def test_bad_dims_are_refused(tmp_path, dims, expected):
    path = _patch(_nifti(tmp_path), 40, "<4h", *dims)
    _refused(path, expected)


def test_unknown_datatype_is_refused(tmp_path):
    path = _patch(_nifti(tmp_path), 70, "<h", 777)
    _refused(path)


def test_non_finite_voxel_size_is_refused(tmp_path):
    path = _patch(_nifti(tmp_path), 80, "<f", float("nan"))
    _refused(path, "voxel sizes")


def test_manifest_check_reports_a_bad_nifti_in_one_line(tmp_path):
    _patch(_nifti(tmp_path), 108, "<f", 10_000.0)
    (tmp_path / "m.csv").write_text("path,patient_id\nv.nii,p1\n")
    with pytest.raises(BadInputError) as err:
        load_manifest(tmp_path / "m.csv")
    assert "v.nii): NIfTI vox_offset 10000 is past the end of the file" in str(err.value)


@pytest.mark.parametrize("content", [bytes(range(256)) * 4, b"hello, not an image", b"\x00" * 700])
def test_random_bytes_named_dcm_are_not_dicom(tmp_path, content):
    path = tmp_path / "scan.dcm"
    path.write_bytes(content)
    for check in (probe, read_image):
        with pytest.raises(BadInputError) as err:
            check(path)
        assert str(err.value) == f"{path}: not a DICOM file (no DICM preamble and not parseable)"


def test_dicom_import_counts_unreadable_and_ignored_files(tmp_path):
    source = tmp_path / "study"
    (source / "series").mkdir(parents=True)
    ct = get_testdata_file("CT_small.dcm")
    (source / "series" / "1.dcm").write_bytes(open(ct, "rb").read())
    (source / "series" / "junk.dcm").write_bytes(b"random bytes, not DICOM" * 10)
    (source / "series" / "junk2.dcm").write_bytes(bytes(range(256)))
    (source / "notes.txt").write_text("scanner notes")
    with pytest.raises(BadInputError, match="junk.dcm: not a DICOM file"):
        import_source(source, tmp_path / "m.csv", kind="dicom")
    summary = import_source(source, tmp_path / "m.csv", kind="dicom", skip_bad=True)
    text = str(summary)
    assert summary.rows == 1 and len(summary.skipped) == 2 and len(summary.ignored) == 1
    assert text.startswith("imported 1 series ")
    assert "skipped 2 unreadable file(s) (first: " in text and "junk.dcm: not a DICOM file" in text
    assert "ignored 1 non-image file(s) (first: " in text and "notes.txt" in text


def test_folder_import_counts_ignored_files(tmp_path):
    source = tmp_path / "tree" / "cls"
    source.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(source / "a.png")
    (source / "readme.md").write_text("about")
    summary = import_source(tmp_path / "tree", tmp_path / "m.csv", kind="folders")
    assert summary.rows == 1 and summary.ignored == [str(source / "readme.md")]
    assert "ignored 1 non-image file(s)" in str(summary)


def test_non_numeric_geometry_names_the_slice(tmp_path):
    import pydicom

    folder = tmp_path / "series"
    folder.mkdir()
    for i in range(3):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.ImagePositionPatient = [0.0, 0.0, float(i)]
        ds.PixelSpacing = [0.25, 0.25]
        ds.save_as(folder / f"{i}.dcm")
    raw = (folder / "1.dcm").read_bytes()
    (folder / "1.dcm").write_bytes(raw.replace(b"0.25\\0.25", b"0.25\\x.25"))
    for check in (probe, read_volume):
        with pytest.raises(BadInputError) as err:
            check(folder / "1.dcm" if check is probe else folder)
        assert str(err.value).startswith(f"{folder / '1.dcm'}: DICOM PixelSpacing is not numeric")
