"""The demo's 3-D stage (GreenRFM-lite on CT phantoms), quick setting: its figures, its summary, its reuse."""

from __future__ import annotations

import math

import pytest

from greenfm.errors import ConfigError
from greenfm.workflows.demo_greenrfm import STAGES, format_greenrfm_demo, run_greenrfm_demo


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo_greenrfm")
    return out, run_greenrfm_demo(out, quick=True, seed=0)


def test_result_is_complete_with_an_auroc_and_its_ci(demo):
    out, result = demo
    zs = result["zeroshot"]
    assert zs["prompts"] == "p3" and zs["split"] == "test"
    assert isinstance(zs["macro_auroc"], float) and 0.0 <= zs["macro_auroc"] <= 1.0
    low, high = zs["macro_ci"]
    assert 0.0 <= low <= zs["macro_auroc"] <= high <= 1.0
    assert 1 <= zs["findings_scored"] <= zs["findings"] == 6
    classifier = result["classifier"]
    assert 0.0 <= classifier["macro_auroc"] <= 1.0 and classifier["macro_ci"][0] <= classifier["macro_ci"][1]
    sizes = result["sizes"]
    assert sizes["patients"] == 12 and sizes["volumes"] >= sizes["patients"]
    assert sum(s["volumes"] for s in sizes["splits"].values()) == sizes["volumes"]
    assert sizes["crop"] == [8, 16, 16] and sizes["backbone"] == "r3d_18_lite"
    assert set(result["stages"]) == set(STAGES)
    compute = result["compute"]
    assert compute["optimizer_steps"] == 6 == sum(s["optimizer_steps"] for s in result["stages"].values())
    assert compute["samples_seen"] == sum(s["samples_seen"] for s in result["stages"].values()) > 0
    assert compute["wall_s"] > 0
    assert math.isclose(compute["wall_s"], sum(s["wall_s"] for s in result["stages"].values()))
    assert compute["training_flops"] is None or compute["training_flops"] > 0
    for stage in STAGES:
        assert (out / "runs" / stage / "exported" / "config.json").is_file()
        assert not (out / "runs" / stage / "checkpoints").exists()  # only needed to resume an unfinished stage


def test_summary_lines_carry_the_figures(demo):
    _, result = demo
    lines = format_greenrfm_demo(result)
    assert 2 <= len(lines) <= 5
    text = "\n".join(lines)
    assert f"{result['zeroshot']['macro_auroc']:.3f}" in text and "p3" in text and "r3d_18_lite" in text
    assert f"{result['compute']['samples_seen']} samples" in text


def test_rerun_reuses_the_finished_stages(demo):
    out, result = demo
    stamps = {s: (out / "runs" / s / "compute.json").stat().st_mtime_ns for s in STAGES}
    again = run_greenrfm_demo(out, quick=True, seed=0)
    assert {s: (out / "runs" / s / "compute.json").stat().st_mtime_ns for s in STAGES} == stamps
    assert again["compute"] == result["compute"] and again["zeroshot"] == result["zeroshot"]


def test_a_folder_with_other_work_is_refused_untouched(tmp_path):
    mine = tmp_path / "runs" / "my_run"
    mine.mkdir(parents=True)
    (mine / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="not written by the 3-D demo stage"):
        run_greenrfm_demo(tmp_path, quick=True)
    assert (mine / "keep.txt").read_text() == "x"


def test_beside_the_other_stages_it_gives_the_same_figures_as_in_process(demo, tmp_path):
    """The full demo runs the 3-D stage in a second process (demo_beside): same code, same seed, same numbers."""
    from greenfm.workflows.demo_beside import LOG_FILE, BesideStage

    _, in_process = demo
    beside = BesideStage(tmp_path / "greenrfm", quick=True, seed=0)
    result = beside.wait()
    assert result["beside_wall_s"] > 0
    for readout in ("zeroshot", "classifier"):
        assert result[readout]["macro_auroc"] == pytest.approx(in_process[readout]["macro_auroc"], abs=1e-12)
        assert result[readout]["macro_ci"] == pytest.approx(in_process[readout]["macro_ci"], abs=1e-12)
    assert "zero-shot macro AUROC" in (tmp_path / "greenrfm" / LOG_FILE).read_text()


def test_a_failure_beside_the_other_stages_names_its_log(tmp_path):
    from greenfm.workflows.demo_beside import BesideStage, BesideStageError

    out = tmp_path / "greenrfm"
    (out / "runs").mkdir(parents=True)
    (out / "runs" / "mine.txt").write_text("not the demo's")  # a folder the 3-D stage refuses to clear
    with pytest.raises(BesideStageError, match=r"3-D stage failed.*not written by the 3-D demo stage.*stage\.log"):
        BesideStage(out, quick=True, seed=0).wait()
    assert (out / "runs" / "mine.txt").is_file()
