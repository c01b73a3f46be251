"""Bad input at the command line: one clear line naming the file or row, exit status 2, no traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from greenfm.cli import main


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def write_png(path: Path, value: int = 128) -> Path:
    Image.fromarray(np.full((16, 16), value, dtype=np.uint8)).save(path)
    return path


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    for name in ("a", "b", "c"):
        write_png(tmp_path / f"{name}.png")
    return tmp_path


def write_manifest(folder: Path, text: str) -> Path:
    path = folder / "manifest.csv"
    path.write_text(text)
    return path


def test_valid_manifest_checks_cleanly(images, capsys):
    manifest = write_manifest(images, "path,patient_id,split,effusion\na.png,p1,train,1\nb.png,p2,test,0\n")
    code, out, _ = run_cli(["data", "check", str(manifest)], capsys)
    assert code == 0 and "2 rows, 2 patients" in out


def test_corrupt_png_names_the_file(images, capsys):
    (images / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    manifest = write_manifest(images, "path,patient_id\na.png,p1\nbad.png,p2\n")
    code, _, err = run_cli(["data", "check", str(manifest)], capsys)
    assert_one_line_error(code, err, "row 3", "bad.png")  # the header is row 1


def test_skip_bad_skips_and_counts(images, capsys):
    (images / "bad.png").write_bytes(b"not an image at all")
    manifest = write_manifest(images, "path,patient_id\na.png,p1\nbad.png,p2\nmissing.png,p3\n")
    code, out, _ = run_cli(["data", "check", str(manifest), "--skip-bad"], capsys)
    assert code == 0
    assert "1 rows" in out and "2 skipped" in out


def test_missing_required_column(images, capsys):
    manifest = write_manifest(images, "path,effusion\na.png,1\n")
    code, _, err = run_cli(["data", "check", str(manifest)], capsys)
    assert_one_line_error(code, err, "patient_id")


def test_duplicated_rows(images, capsys):
    manifest = write_manifest(images, "path,patient_id\na.png,p1\na.png,p1\n")
    code, _, err = run_cli(["data", "check", str(manifest)], capsys)
    assert_one_line_error(code, err, "duplicate path", "row 3")


def test_patient_in_two_splits(images, capsys):
    manifest = write_manifest(images, "path,patient_id,split\na.png,p1,train\nb.png,p1,test\n")
    code, _, err = run_cli(["data", "check", str(manifest)], capsys)
    assert_one_line_error(code, err, "several splits")


def test_empty_manifest(images, capsys):
    manifest = write_manifest(images, "path,patient_id\n")
    code, _, err = run_cli(["data", "check", str(manifest)], capsys)
    assert_one_line_error(code, err, "empty")


def test_unknown_label_value(images, capsys):
    manifest = write_manifest(images, "path,patient_id,effusion\na.png,p1,yes\n")
    code, _, err = run_cli(["data", "check", str(manifest)], capsys)
    assert_one_line_error(code, err, "effusion", "row 2")


def test_a_numeric_bad_label_is_shown_as_written(images, capsys):
    manifest = write_manifest(images, "path,patient_id,effusion\na.png,p1,2\nb.png,p2,\n")
    code, _, err = run_cli(["data", "check", str(manifest)], capsys)
    assert_one_line_error(code, err, "effusion='2'", "row 2")


def test_truncated_dicom(tmp_path, capsys):
    pydicom_data = pytest.importorskip("pydicom.data")
    source = Path(pydicom_data.get_testdata_file("CT_small.dcm")).read_bytes()
    (tmp_path / "cut.dcm").write_bytes(source[: len(source) // 2])
    manifest = write_manifest(tmp_path, "path,patient_id\ncut.dcm,p1\n")
    code, _, err = run_cli(["data", "check", str(manifest)], capsys)
    assert_one_line_error(code, err, "cut.dcm")


def test_unknown_recipe_lists_valid_names(images, capsys):
    manifest = write_manifest(images, "path,patient_id\na.png,p1\n")
    code, _, err = run_cli(
        ["pretrain", "--data", str(manifest), "--out", str(images / "run"), "--recipe", "nope"], capsys
    )
    assert_one_line_error(code, err, "token-reconstruction")


def test_offline_hub_name_says_how_to_pass_a_local_file(images, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    manifest = write_manifest(images, "path,patient_id\na.png,p1\n")
    code, _, err = run_cli(
        ["embed", "--model", "hf-hub:timm/vit_small_patch14_reg4_dinov2.lvd142m", "--backbone",
         "vit_small_patch14_reg4_dinov2", "--data", str(manifest), "--out", str(images / "e.parquet")],
        capsys,
    )
    assert code == 2 and "Traceback" not in err
    assert "local" in err.lower()


def test_comparing_a_folder_that_is_not_a_study_names_it(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    code, _, err = run_cli(["evaluate", "compare", str(tmp_path / "a"), str(tmp_path / "a")], capsys)
    assert_one_line_error(code, err, "not a label-efficiency study", str(tmp_path / "a"))


@pytest.mark.parametrize("error", [FileExistsError(17, "File exists", "runs/split.csv"),
                                   NotADirectoryError(20, "Not a directory", "runs/split.csv/run")])
def test_an_out_path_that_is_a_file_is_one_line(tmp_path, capsys, monkeypatch, error):
    # every verb that makes its --out folder meets this when --out names a file (a manifest, say)
    def export(*_, **__):
        raise error

    monkeypatch.setattr("greenfm.api.export", export)
    code, _, err = run_cli(["export", str(tmp_path), "--out", "x"], capsys)
    assert_one_line_error(code, err, "runs/split.csv", "--out")


def test_a_missing_model_path_is_not_found_not_a_missing_backbone(tmp_path):
    from greenfm.errors import BadInputError
    from greenfm.workflows.inputs import load_encoder

    (tmp_path / "runs").mkdir()
    for missing in (tmp_path / "runs" / "nope", tmp_path / "weights.safetensors"):
        with pytest.raises(BadInputError, match="not found"):
            load_encoder(missing)
    with pytest.raises(BadInputError, match="needs --backbone"):  # a hub name is not a local path
        load_encoder("timm/not-a-local-folder")
    finetuned = tmp_path / "runs" / "ft"
    (finetuned / "exported").mkdir(parents=True)
    (finetuned / "exported" / "best.safetensors").write_bytes(b"")
    with pytest.raises(BadInputError, match="fine-tuning run.*greenfm export"):
        load_encoder(finetuned)
