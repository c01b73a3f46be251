"""``greenfm demo --quick``: the whole pipeline runs, writes its artefacts, and a re-run reuses them.

The quick demo is far too small to show token reconstruction's gain; these tests check
the plumbing and its promises (teacher = the warm start, paired resamples, reuse), not
the gain, which the full demo measures (docs/results.md).
"""

from __future__ import annotations

import io
import json
from dataclasses import replace

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file

from greenfm.workflows.demo import QUICK, SETTING_FILE, _prepare, run_demo

pytestmark = pytest.mark.slow


def _console() -> Console:
    return Console(file=io.StringIO(), width=140, force_terminal=False)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("demo") / "demo"
    console = _console()
    try:
        result = run_demo(out, quick=True, console=console)
    finally:
        torch.set_num_threads(threads)
    return out, result, console.file.getvalue()


def test_quick_demo_writes_every_artefact_under_out(demo):
    out, result, _ = demo
    for path in ("data/source/manifest.csv", "data/target/manifest.csv", "data/target_split.csv", "data/contract.json",
                 "runs/start/exported/config.json", "runs/start/compute.json", "runs/start/probe/probe.json",
                 "runs/pretrain/config.yaml", "runs/pretrain/metrics.jsonl", "runs/pretrain/compute.json",
                 "runs/pretrain/exported/config.json", "runs/pretrain/probe/predictions.parquet",
                 "embeddings/start.parquet", "embeddings/adapted.parquet", "demo_results.json", SETTING_FILE,
                 "runs/label_efficiency/label_efficiency.csv", "report.html"):  # fmt: skip
        assert (out / path).is_file(), path
    assert any((out / "cache").iterdir())
    saved = json.loads((out / "demo_results.json").read_text())
    assert saved["setting"]["name"] == "quick"
    assert saved["pretrain_compute"]["optimizer_steps"] == result.pretrain_compute["optimizer_steps"] > 0
    assert set(result.timings) >= {"phantoms", "starting model", "token reconstruction", "embed + probe",
                                   "label efficiency", "3-D greenrfm", "report"}
    modes = {row["mode"] for row in saved["label_efficiency"]["summary"]}
    assert modes == {"linear-probe", "lora", "full-finetune"}
    pairs = saved["label_efficiency_pairs"]  # each pair of modes at each fraction, paired on the test images
    assert {(r["fraction"], r["a"], r["b"]) for r in pairs} == {
        (f, a, b) for f in (0.5, 1.0) for a, b in (("linear-probe", "lora"), ("linear-probe", "full-finetune"),
                                                    ("lora", "full-finetune"))}
    assert all(r["difference_ci"][0] <= r["difference"] <= r["difference_ci"][1] for r in pairs)
    three_d = saved["greenrfm"]
    assert three_d["setting"] == "quick" and (out / "greenrfm/runs/align/exported/config.json").is_file()
    assert 0.0 <= three_d["zeroshot"]["macro_auroc"] <= 1.0


def test_token_reconstruction_starts_from_the_warm_start_and_moves_away_from_it(demo):
    out, _, _ = demo
    record = json.loads((out / "runs/pretrain/compute.json").read_text())["run"]
    start_weights = out / "runs/start/exported/model.safetensors"
    assert record["init_weights"]["kind"] == "file"
    assert record["init_weights"]["path"] == str(start_weights.resolve())
    assert record["flags"]["no_pretrained_init"] is False
    start, adapted = load_file(str(start_weights)), load_file(str(out / "runs/pretrain/exported/model.safetensors"))
    assert start.keys() == adapted.keys()
    assert any(not torch.equal(start[k], adapted[k]) for k in start)


def test_both_models_are_compared_on_the_same_patient_resamples(demo):
    out, result, _ = demo
    comparison = result.comparison
    findings = json.loads((out / "data/source/phantoms.json").read_text())["findings"]
    assert [row.name for row in comparison.rows] == [*findings, "macro"]
    probes = [json.loads((out / f"runs/{run}/probe/probe.json").read_text())["test"] for run in ("start", "pretrain")]
    macro = comparison.macro
    assert macro.auroc_a == pytest.approx(probes[0]["macro_auroc"])
    assert macro.auroc_b == pytest.approx(probes[1]["macro_auroc"])
    assert list(macro.ci_a) == pytest.approx(probes[0]["macro_auroc_ci"])  # the probe's own resamples
    assert list(macro.ci_b) == pytest.approx(probes[1]["macro_auroc_ci"])
    assert macro.difference == pytest.approx(macro.auroc_b - macro.auroc_a)
    assert macro.difference_ci[0] <= macro.difference_ci[1]


def test_output_says_what_the_starting_model_is_and_how_a_user_replaces_it(demo):
    _, result, text = demo
    assert "site A" in result.starting_model and "random weights" in result.starting_model
    for words in ("Starting model", "--init", "DINOv2", "Token-reconstruction", "paired", "Summary"):
        assert words in text, words


def test_a_rerun_reuses_finished_stages_and_reproduces_the_numbers(demo):
    out, first, _ = demo
    checkpoint = out / "runs/pretrain/checkpoints/last.ckpt"
    stamp = checkpoint.stat().st_mtime_ns
    console = _console()
    second = run_demo(out, quick=True, console=console)
    assert checkpoint.stat().st_mtime_ns == stamp  # not retrained
    assert "reusing" in console.file.getvalue()
    assert second.comparison.to_dict() == first.comparison.to_dict()


def test_a_folder_from_another_setting_is_cleared_but_other_files_are_kept(tmp_path):
    out = tmp_path / "demo"
    _prepare(out, QUICK, _console())
    (out / "runs" / "start").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    _prepare(out, replace(QUICK, seed=1), _console())
    assert not (out / "runs").exists()
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / SETTING_FILE).read_text())["seed"] == 1


def test_the_3d_stage_beside_the_others_gives_the_same_figures_and_says_so(demo, tmp_path):
    _, in_process, _ = demo
    console = _console()
    setting = replace(QUICK, greenrfm_beside=True, label_efficiency=False, image_text=False)
    result = run_demo(tmp_path / "demo", setting=setting, console=console)
    timing = result.timings["3-D greenrfm"]
    assert timing["beside_wall_s"] > 0 and timing["cpu_s"] > 0  # the child's CPU is counted where it is shown
    text = console.file.getvalue()
    assert "second process beside stages 1-7" in text and "beside 1-7)" in text
    for readout in ("zeroshot", "classifier"):
        assert result.greenrfm[readout]["macro_auroc"] == pytest.approx(in_process.greenrfm[readout]["macro_auroc"])
    assert (tmp_path / "demo" / "greenrfm" / "stage.log").is_file()
