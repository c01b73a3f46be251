"""Importers: a source -> a manifest that loads, with the right rows, labels and splits."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from greenfm.data.importers import import_source
from greenfm.data.manifest import load_manifest
from greenfm.data.readers import read_image, read_volume
from greenfm.errors import BadInputError, ConfigError

DICOMDIR_TESTS = Path(get_testdata_file("CT_small.dcm")).parent / "dicomdirtests"


def test_medmnist_round_trip(tmp_path, shared_data):
    source = shared_data / "medmnist" / "pneumoniamnist_28.npz"
    summary = import_source(source, tmp_path / "pneumonia.csv")
    assert summary.kind == "medmnist" and summary.label_kind == "binary"
    assert summary.splits == {"train": 4690, "val": 524, "test": 621}
    manifest = load_manifest(tmp_path / "pneumonia.csv", check_files=False)
    assert manifest.findings == ["pneumonia"] and len(manifest) == 5835
    assert (manifest.table["patient_id"] == manifest.table["id"]).all()
    assert manifest.table["meta_patient_note"].str.contains("no patient ids").all()
    with np.load(source) as data:
        for split, index in [("train", 0), ("val", 523), ("test", 311)]:
            row = manifest.table[manifest.table["id"] == f"{split}_{index:05d}"].iloc[0]
            assert row["split"] == split
            np.testing.assert_array_equal(read_image(row["path"]).array, data[f"{split}_images"][index])
            assert row["pneumonia"] == data[f"{split}_labels"][index, 0]
        assert manifest.split("train").labels().sum() == data["train_labels"].sum()
    assert source.stat().st_size > 0 and summary.written == tmp_path / "pneumonia_images"
    with pytest.raises(BadInputError, match="already exists"):
        import_source(source, tmp_path / "pneumonia.csv")


def _tiny_npz(path: Path, labels: np.ndarray, channels: int = 0) -> Path:
    n = len(labels)
    shape = (n, 6, 6, channels) if channels else (n, 6, 6)
    images = np.arange(np.prod(shape), dtype=np.uint32).reshape(shape).astype(np.uint8)
    np.savez(path, train_images=images[: n - 2], train_labels=labels[: n - 2], test_images=images[n - 2 :], test_labels=labels[n - 2 :])
    return path


def test_medmnist_multiclass_is_one_hot_with_integer_label(tmp_path):
    labels = np.array([[0], [2], [1], [3], [2], [0]], np.uint8)
    source = _tiny_npz(tmp_path / "grades.npz", labels, channels=3)
    summary = import_source(source, tmp_path / "out" / "grades.parquet")
    assert summary.label_kind == "multi-class" and summary.splits == {"train": 4, "test": 2}
    table = load_manifest(tmp_path / "out" / "grades.parquet").table
    assert list(table.columns[table.columns.str.startswith("class_")]) == ["class_0", "class_1", "class_2", "class_3"]
    np.testing.assert_array_equal(table[["class_0", "class_1", "class_2", "class_3"]].to_numpy().argmax(1), labels[:, 0])
    np.testing.assert_array_equal(table["meta_label"], labels[:, 0])
    assert read_image(table["path"].iloc[0]).array.shape == (6, 6, 3)
    named = import_source(source, tmp_path / "named.csv", label_names=["a", "b", "c", "d"])
    assert named.findings == ["a", "b", "c", "d"]


def test_medmnist_binary_label_names(tmp_path):
    source = _tiny_npz(tmp_path / "x.npz", np.array([[0], [1], [1], [0]], np.uint8))
    assert import_source(source, tmp_path / "a.csv").findings == ["class_1"]
    assert import_source(source, tmp_path / "b.csv", label_names=["normal", "Effusion (left)"]).findings == ["effusion_left"]
    # more names than observed classes: a multi-class set whose last class is absent here
    assert import_source(source, tmp_path / "c.csv", label_names=["x", "y", "z"]).findings == ["x", "y", "z"]
    multi = _tiny_npz(tmp_path / "m.npz", np.array([[0], [1], [2], [3]], np.uint8))
    with pytest.raises(BadInputError, match="1 label names given for 4 classes"):
        import_source(multi, tmp_path / "d.csv", label_names=["x"])


def _write_png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(path)


def test_class_folders_with_splits(tmp_path):
    source = tmp_path / "tree"
    for split, n in [("train", 3), ("val", 1)]:
        for label in ("normal", "Pleural Effusion"):
            for i in range(n):
                _write_png(source / split / label / f"{label[:3]}{i}.png", i)
    (source / "train" / "normal" / "notes.txt").write_text("ignored: not an image")
    summary = import_source(source, tmp_path / "m.csv")
    assert summary.kind == "folders" and summary.rows == 8
    assert summary.splits == {"train": 6, "val": 2} and summary.findings == ["normal", "pleural_effusion"]
    table = load_manifest(tmp_path / "m.csv").table
    assert (table["normal"] + table["pleural_effusion"] == 1).all()  # one-hot
    row = table[table["id"] == "val/Pleural Effusion/Ple0.png"].iloc[0]
    assert row["pleural_effusion"] == 1 and row["split"] == "val"


def test_class_folders_of_dicom_radiographs_keep_patient_ids(tmp_path):
    source = tmp_path / "xr"
    for label, folder in [("lateral", "CR1"), ("oblique", "CR2"), ("oblique", "CR3")]:
        (source / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(DICOMDIR_TESTS / "77654033" / folder / next((DICOMDIR_TESTS / "77654033" / folder).iterdir()).name, source / label / f"{folder}.dcm")
    summary = import_source(source, tmp_path / "xr.csv", kind="folders")
    table = load_manifest(tmp_path / "xr.csv").table
    assert summary.rows == 3 and set(table["patient_id"]) == {"77654033"}
    assert table["lateral"].sum() == 1 and table["oblique"].sum() == 2


def test_bad_image_stops_the_import_or_is_skipped(tmp_path):
    source = tmp_path / "tree"
    _write_png(source / "a" / "ok.png", 1)
    (source / "b").mkdir()
    (source / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(BadInputError) as err:
        import_source(source, tmp_path / "m.csv")
    assert "broken.png" in str(err.value) and "\n" not in str(err.value)
    summary = import_source(source, tmp_path / "m.csv", skip_bad=True)
    assert summary.rows == 1 and len(summary.skipped) == 1 and "skipped 1" in str(summary)


def test_dicom_folder_one_row_per_series(tmp_path, shared_data):
    summary = import_source(shared_data / "volumes" / "example_ct_dicom", tmp_path / "ct.csv")
    assert summary.kind == "dicom" and summary.rows == 1 and summary.written is None  # nothing copied
    row = load_manifest(tmp_path / "ct.csv").table.iloc[0]
    assert Path(row["path"]) == shared_data / "volumes" / "example_ct_dicom"
    assert row["meta_slices"] == 20 and row["meta_modality"] == "CT"
    assert read_volume(row["path"]).shape == (20, 512, 512)


def test_mixed_dicom_folder_writes_one_volume_per_series(tmp_path):
    source = tmp_path / "mixed"
    source.mkdir()
    for folder in ("77654033/CT2", "98892001/CT5N"):  # two CT series, dumped into one folder
        for f in (DICOMDIR_TESTS / folder).iterdir():
            shutil.copy(f, source / f"{folder.split('/')[1]}_{f.name}")
    shutil.copy(DICOMDIR_TESTS / "77654033" / "CR1" / "6154", source / "radiograph.dcm")
    before = sorted(p.name for p in source.iterdir())
    summary = import_source(source, tmp_path / "out.csv")
    assert sorted(p.name for p in source.iterdir()) == before  # the source is never written
    table = load_manifest(tmp_path / "out.csv").table.sort_values("meta_slices")
    assert list(table["meta_slices"]) == [1, 4, 5]
    assert table["patient_id"].tolist() == ["77654033", "77654033", "98890234"]  # PatientID
    assert table["path"].iloc[0].endswith("radiograph.dcm")  # a one-file series is the file itself
    volumes = [read_volume(p) for p in table["path"].iloc[1:]]
    assert [v.shape[0] for v in volumes] == [4, 5] and summary.written == tmp_path / "out_volumes"
    assert all(str(p).endswith(".nii.gz") for p in table["path"].iloc[1:])


def test_nifti_folder(tmp_path, shared_data):
    summary = import_source(shared_data / "volumes", tmp_path / "v.csv", kind="nifti", pattern="*_sm.nii.gz")
    table = load_manifest(tmp_path / "v.csv").table
    assert summary.rows == 2 and sorted(table["patient_id"]) == ["example_ct_sm", "example_mr_sm"]


def test_refusals(tmp_path):
    source = _tiny_npz(tmp_path / "x.npz", np.array([[0], [1], [1], [0]], np.uint8))
    with pytest.raises(BadInputError, match="overwrite the source"):
        import_source(source, source, overwrite=True)
    with pytest.raises(ConfigError, match="folders"):
        import_source(source, tmp_path / "m.csv", kind="zip")
    with pytest.raises(BadInputError, match="not found"):
        import_source(tmp_path / "absent", tmp_path / "m.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError, match="cannot tell"):
        import_source(tmp_path / "empty", tmp_path / "m.csv")
    assert not (tmp_path / "m.csv").exists()


def test_auto_refuses_a_folder_of_dicom_and_nifti_rather_than_dropping_one(tmp_path, shared_data):
    with pytest.raises(BadInputError, match="DICOM files and .* NIfTI volume.*--kind dicom or --kind nifti"):
        import_source(shared_data / "volumes", tmp_path / "both.csv")


def test_medmnist_import_records_the_modality(tmp_path, shared_data):
    import_source(shared_data / "medmnist" / "pneumoniamnist_28.npz", tmp_path / "p.csv")
    assert set(load_manifest(tmp_path / "p.csv", check_files=False).table["meta_modality"]) == {"xray"}


def test_import_warns_when_each_image_is_its_own_patient(tmp_path):
    """MedMNIST has no patient ids: the summary says how many rows became their own patient."""
    import numpy as np

    from greenfm.data.importers import import_source

    rng = np.random.default_rng(0)
    arrays = {f"{s}_images": rng.integers(0, 255, (4, 28, 28), dtype=np.uint8) for s in ("train", "val", "test")}
    arrays.update({f"{s}_labels": np.array([[0], [1], [0], [1]]) for s in ("train", "val", "test")})
    np.savez(tmp_path / "pneumoniamnist_28.npz", **arrays)
    summary = import_source(tmp_path / "pneumoniamnist_28.npz", tmp_path / "m.csv")
    assert summary.own_patient_rows == 12
    assert "warning: 12 of 12 rows have no patient id" in str(summary)
