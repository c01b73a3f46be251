"""The HTML report: self-contained, every section present, skipped findings and unmeasured compute shown honestly."""

from __future__ import annotations

import base64
import io
import re

import pytest
from PIL import Image

from greenfm.errors import BadInputError
from greenfm.report import build_report, read_run
from greenfm.report.fragments import SECTIONS

SECTION_IDS = [sid for sid, _ in SECTIONS] + ["caveat"]


@pytest.fixture(scope="module")
def report(report_runs, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("report") / "report.html"
    assert build_report([report_runs["full"], report_runs["empty"], report_runs["broken"]], out) == out
    return out.read_text(encoding="utf-8")


def _section(html: str, section_id: str) -> str:
    match = re.search(rf'<section class="block" id="{section_id}">(.*?)</section>', html, re.S)
    assert match, f"section {section_id} missing"
    return match.group(1)


def test_every_section_is_there_once_with_its_stable_id(report):
    for section_id in SECTION_IDS:
        assert report.count(f'id="{section_id}"') == 1, section_id
    assert "Research use only" in report and "not for clinical decisions" in report


def test_the_page_is_self_contained(report):
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", report)
    assert "url(" not in report and "@import" not in report
    assert "Content-Security-Policy" in report and "default-src 'none'" in report
    images = re.findall(r'<img src="([^"]+)"', report)
    assert len(images) == 3  # label efficiency, ROC grid, training curve
    for uri in images:
        assert uri.startswith("data:image/png;base64,")
        png = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
        png.load()
        assert png.width > 300 and png.height > 150


def test_degenerate_finding_is_skipped_not_scored_half(report):
    table = _section(report, "finding-metrics")
    rare = re.search(r"<tr class=skipped><td>rare</td>(.*?)</tr>", table, re.S)
    assert rare and "skipped" in rare.group(1) and "0.500" not in rare.group(1)
    assert "Macro mean over 2 of 3 findings" in table
    assert re.search(r"effusion</td>.*?\d\.\d{3} <span class=\"ci\">\(\d\.\d{3}&ndash;\d\.\d{3}\)", table, re.S)
    assert "Not scored: rare (one class in train" in _section(report, "roc-curves")


def test_unmeasured_energy_is_unavailable_never_zero(report):
    cards = _section(report, "green-card")
    energy = re.search(r"<dt>Energy</dt><dd([^>]*)>([^<]*)</dd>", cards)
    assert energy.group(2) == "unavailable" and "na" in energy.group(1)
    assert "track_energy=False" in cards  # the ledger's reason is shown
    assert not re.search(r">0(\.0+)? (kWh|kg)", cards)
    assert re.search(r"<dt>Device-hours</dt><dd>[0-9.e+-]+ h</dd>", cards)
    assert re.search(r"<dt>Parameters</dt><dd>2\d\d,\d{3}</dd>", cards)


def test_data_and_config_sections(report, report_runs):
    data = _section(report, "data-summary")
    assert "120" in data and "60" in data  # rows and patients of the manifest
    assert "the file matches the run" in data and "test 24 images / 12 patients" in data
    config = _section(report, "config")
    assert "<details>" in config and "token-reconstruction" in config


def test_missing_and_broken_artefacts_are_named(report, report_runs):
    summary = _section(report, "summary")
    assert "compute.json: cannot be read" in summary and "finetune.json: cannot be read" in summary
    assert "predictions.csv: cannot be read" in summary
    roc = _section(report, "roc-curves")
    assert "empty: no per-image test predictions" in roc
    assert "broken" in _section(report, "config")


def test_a_report_on_an_empty_folder_still_has_every_section(report_runs, tmp_path):
    html = build_report([report_runs["empty"]], tmp_path / "r.html").read_text()
    for section_id in SECTION_IDS:
        assert f'id="{section_id}"' in html
    assert "No label-efficiency results" in html and "No training curves" in html
    assert "<img" not in html


def test_label_efficiency_table_and_curve(report):
    section = _section(report, "label-efficiency")
    assert "<img" in section and "linear-probe" in section and "lora" in section
    assert section.count("<tr>") >= 6  # 2 modes x 3 fractions


def test_run_names_are_unique_and_bad_folders_refused(report_runs, tmp_path):
    with pytest.raises(BadInputError, match="run folder not found"):
        build_report([tmp_path / "nope"], tmp_path / "r.html")
    with pytest.raises(BadInputError):
        build_report([], tmp_path / "r.html")
    (tmp_path / "a" / "x").mkdir(parents=True)
    (tmp_path / "b" / "x").mkdir(parents=True)
    html = build_report([tmp_path / "a" / "x", tmp_path / "b" / "x"], tmp_path / "r.html").read_text()
    assert "a/x" in html and "b/x" in html


def test_read_run_finds_artefacts_one_level_down(report_runs):
    run = read_run(report_runs["full"])
    assert run.probe is not None and run.sources["probe"].parent.name == "probe"
    assert run.evaluation_source == "probe" and run.evaluation["n_evaluable"] == 2
    assert run.method == "token-reconstruction" and run.encoder_name.startswith("vit_small_patch14_reg4_dinov2")
    assert run.n_parameters > 200_000
    assert run.label_efficiency is not None and run.compute is not None and not run.problems


def test_a_study_comparison_gets_a_table_and_a_forest_plot(tmp_path):
    from greenfm.workflows.study_comparison import CellDifference, StudyComparison

    rows = [
        CellDifference("lora", 0.01, [0, 1, 2], 47, 0.60, 0.62, 0.025, (0.018, 0.033), 0.001, [0.02, 0.03, 0.025]),
        CellDifference("lora", 1.0, [0, 1, 2], 4690, 0.80, 0.79, -0.004, (-0.02, 0.01), 0.5, [0.0, -0.01, -0.002]),
    ]
    StudyComparison("a", "b", "start", "adapted", rows, 1000, 0, 621, 621, ["full 0.1 seed 2: only in A"]).save(
        tmp_path / "cmp"
    )
    html = build_report([tmp_path / "cmp"], tmp_path / "report.html").read_text(encoding="utf-8")
    section = _section(html, "comparison")
    assert "A: start" in section and "B: adapted" in section and "adapted better" in section
    assert "no clear difference" in section and "+0.025" in section and "(+0.018 to +0.033)" in section
    assert len(re.findall(r'<img src="data:image/png;base64,', section)) == 1
    assert "No model comparison" in _section(build_report([tmp_path], tmp_path / "other.html").read_text(), "comparison")
