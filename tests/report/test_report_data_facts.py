"""The report's data section says what is true: a training-rows hash matches, image-level 'patients' are named."""

from __future__ import annotations

import pandas as pd

from greenfm.data.manifest import load_manifest
from greenfm.report.runs import RunArtifacts, describe_data
from greenfm.report.sections import data_summary


def _manifest(tmp_path, patients, name="m.csv"):
    rows = [{"path": f"{i}.png", "id": patients[i] if len(set(patients)) == 8 else f"img{i}", "patient_id": patients[i], "effusion": i % 2, "split": "train" if i < 6 else "test"}
            for i in range(8)]  # fmt: skip
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_a_hash_of_the_training_rows_is_no_mismatch_and_image_patients_are_said(tmp_path):
    path = _manifest(tmp_path, [f"p{i}" for i in range(8)])
    manifest = load_manifest(path, check_files=False)
    train_hash = manifest.subset((manifest.table["split"] == "train").to_numpy()).hash
    run = RunArtifacts(root=tmp_path, name="pretrain", config={"pretrain": {"data": str(path)}},
                       record={"manifest_hash": train_hash})  # fmt: skip
    facts = describe_data(run)
    assert facts.hash_matches and facts.hash_of == "its train rows"
    html = data_summary([run])
    assert "differs" not in html and "no patient ids" in html and "Patients are split, never images" not in html
    grouped = _manifest(tmp_path, [f"p{i // 2}" if i < 6 else f"q{i}" for i in range(8)], "g.csv")
    assert "Patients are split, never images" in data_summary([RunArtifacts(root=tmp_path, name="g",
                                                                             config={"data": str(grouped)})])


def test_a_probe_on_other_data_than_training_is_no_mismatch(tmp_path):
    path = _manifest(tmp_path, [f"p{i}" for i in range(8)])
    manifest = load_manifest(path, check_files=False)
    run = RunArtifacts(root=tmp_path, name="start", record={"manifest_hash": "trained-elsewhere"},
                       probe={"sources": {"manifest": str(path), "manifest_hash": manifest.hash}})  # fmt: skip
    facts = describe_data(run)
    assert facts.hash_matches and "probe" in facts.hash_of


def test_a_study_reports_the_compute_its_cells_measured(tmp_path):
    import json

    from greenfm.report.runs import study_compute

    for name, hours in (("lora-f0.1-s0", 0.01), ("full-f1-s0", 0.02)):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "compute.json").write_text(json.dumps(
            {"device_hours": hours, "wall_time_s": 36.0, "total_training_flops": 1e9, "energy_kwh": "unavailable",
             "co2_kg": "unavailable", "device_type": "cpu", "device_count": 1}))  # fmt: skip
    compute = study_compute(tmp_path)
    assert abs(compute["device_hours"] - 0.03) < 1e-12 and compute["runs"] == 2
    assert compute["energy_kwh"] == "unavailable" and "energy_kwh" in compute["unavailable"]
    assert study_compute(tmp_path / "empty") is None


def test_a_staged_run_and_a_scaling_study_report_their_sub_runs_compute(tmp_path):
    import json

    import yaml

    from greenfm.report.runs import read_run

    def ledger(folder, hours):
        folder.mkdir(parents=True)
        (folder / "compute.json").write_text(json.dumps(
            {"device_hours": hours, "wall_time_s": 10.0, "total_training_flops": 1e9, "device_type": "cpu"}))

    staged = tmp_path / "greenrfm"
    for stage, hours in (("image", 0.01), ("text", 0.02), ("align", 0.04)):
        ledger(staged / stage, hours)
    ledger(staged / "elsewhere", 1.0)  # not a stage the run lists: not summed
    (staged / "config.yaml").write_text(yaml.safe_dump({"stages": ["image", "text", "align"]}))
    run = read_run(staged)
    assert abs(run.compute["device_hours"] - 0.07) < 1e-12 and run.compute["runs"] == 3
    assert "compute" not in run.missing and "image/compute.json" in run.compute["summed_over"]
    scaling = tmp_path / "scaling"
    for cell in ("unicl-n100", "unicl-n200"):
        ledger(scaling / "cells" / cell, 0.5)
    assert read_run(scaling).compute["device_hours"] == 1.0
    (tmp_path / "bare").mkdir()
    assert read_run(tmp_path / "bare").compute is None


def test_the_summary_names_the_architecture_the_run_trained():
    spec = {"name": "vit_small_patch14_reg4_dinov2", "kwargs": {"embed_dim": 64, "depth": 4, "patch_size": 8}}
    run = RunArtifacts(root=None, name="tr", record={"backbone": "vit_small_patch14_reg4_dinov2",
                                                     "towers": {"image": spec}})  # fmt: skip
    assert run.encoder_name == "vit_small_patch14_reg4_dinov2 (width 64, depth 4, patch 8)"


def test_a_3d_run_is_named_by_greenfm_not_by_the_torchvision_model_it_adapts():
    from greenfm.models.video3d import r3d_spec

    run = RunArtifacts(root=None, name="3d", record={"towers": {"image": r3d_spec("r3d_18_lite")}})
    assert run.encoder_name == "r3d_18_lite"
    assert RunArtifacts(root=None, name="3d", record={"towers": {"image": r3d_spec("r3d_18")}}).encoder_name == "r3d_18"


def test_a_results_file_stands_for_the_run_folder_that_holds_it(tmp_path):
    from greenfm.report.runs import read_run

    run_dir = tmp_path / "curate-run"
    run_dir.mkdir()
    (run_dir / "probe.json").write_text('{"macro_auroc": 0.7}')
    run = read_run(run_dir / "probe.json")
    assert run.root == run_dir and run.name == "curate-run" and run.probe == {"macro_auroc": 0.7}
    from greenfm.report.html import _unique_names

    assert _unique_names([run_dir / "probe.json"]) == ["curate-run"]
