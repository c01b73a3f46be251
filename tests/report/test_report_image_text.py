"""Zero-shot and retrieval result folders, written by the evaluate layer, rendered by ``greenfm report``."""

from __future__ import annotations

import re

import numpy as np
import pytest

from greenfm.evaluate.image_text_results import write_retrieval_results, write_zeroshot_results
from greenfm.evaluate.prompts import prompt_pairs
from greenfm.evaluate.retrieval import retrieval_metrics
from greenfm.evaluate.zeroshot import score_zeroshot, zeroshot_probabilities
from greenfm.report import build_report, read_run

FINDINGS = ["Pleural_Effusion", "Nodule", "rare"]


def _section(html: str, section_id: str) -> str:
    match = re.search(rf'<section class="block" id="{section_id}">(.*?)</section>', html, re.S)
    assert match, f"section {section_id} missing"
    return match.group(1)


@pytest.fixture(scope="module")
def image_text_run(tmp_path_factory):
    """A folder with zeroshot/zeroshot.json (one finding never present) and retrieval/retrieval.json."""
    rng = np.random.default_rng(0)
    n, d = 300, 16
    labels = (rng.random((n, 3)) < 0.3).astype(float)
    labels[:, 2] = 0.0
    labels[::6, 1] = -1.0
    positive, negative = rng.normal(size=(3, d)), rng.normal(size=(3, d))
    images = rng.normal(size=(n, d)) + 0.6 * (2 * np.clip(labels, 0, 1) - 1) @ (positive - negative)
    probabilities = zeroshot_probabilities(images, positive, negative, normalize=True)
    metrics = score_zeroshot(probabilities, labels, np.arange(n) // 3, FINDINGS, n_resamples=100, seed=0)
    root = tmp_path_factory.mktemp("image_text") / "clip-run"
    write_zeroshot_results(root / "zeroshot", metrics, prompt_family="p3", prompts=prompt_pairs(FINDINGS, "p3"),
                           readout="prompts", model_ref="runs/clip-run",
                           data_ref={"manifest_hash": "abc123"})  # fmt: skip
    texts = [f"report {i % 250}" for i in range(n)]  # 50 reports shared by two images
    result = retrieval_metrics(images, images + 0.8 * rng.normal(size=images.shape), texts, ks=(1, 5, 10, 50, 500))
    write_retrieval_results(root / "retrieval", result, model_ref="runs/clip-run")
    html = build_report([root], root.parent / "report.html").read_text(encoding="utf-8")
    return root, metrics, result, html


def test_read_run_finds_both_result_files_one_level_down(image_text_run):
    root, metrics, result, _ = image_text_run
    run = read_run(root)
    assert run.zeroshot["prompt_family"] == "p3" and run.retrieval["n_unique_texts"] == 250
    assert run.sources["zeroshot"].parent.name == "zeroshot" and run.sources["retrieval"].parent.name == "retrieval"
    assert run.evaluation_source == "zeroshot" and run.method == "zero-shot" and not run.problems


def test_zeroshot_section_shows_findings_prompts_macro_against_chance_and_skips(image_text_run):
    _, metrics, _, html = image_text_run
    section = _section(html, "zeroshot")
    effusion = metrics["Pleural_Effusion"]
    low, high = effusion.auroc_ci
    assert f"{effusion.auroc:.3f} <span class=\"ci\">({low:.3f}&ndash;{high:.3f})</span>" in section
    assert "&ldquo;There is pleural effusion.&rdquo;" in section and "&ldquo;There is no nodule.&rdquo;" in section
    assert "<code>p3</code>" in section
    mlow, mhigh = metrics.macro_auroc_ci
    macro = f'{metrics.macro_auroc:.3f} <span class="ci">({mlow:.3f}&ndash;{mhigh:.3f})</span> vs chance 0.5'
    assert macro in section
    assert ("above chance" if mlow > 0.5 else "chance") in section
    rare = re.search(r"<tr class=skipped><td>rare</td>(.*?)</tr>", section, re.S)
    assert rare and "skipped: only one class present" in rare.group(1) and "0.500" not in rare.group(1)
    assert "2 of 3; 1 skipped" in section and "Macro mean over 2 of 3 findings" in section
    assert "100 patient-level bootstrap resamples" in section and "abc123" in section
    # the summary carries its macro; the per-finding section points here instead of repeating it
    summary = _section(html, "summary")
    assert "zero-shot" in summary and f"{metrics.macro_auroc:.3f}" in summary
    assert 'href="#zeroshot"' in _section(html, "finding-metrics")


def test_retrieval_section_shows_recall_beside_random_and_mean_rank(image_text_run):
    _, _, result, html = image_text_run
    section = _section(html, "retrieval")
    i2t = {e["k"]: e for e in result["image_to_text"]["recall"]}
    t2i = {e["k"]: e for e in result["text_to_image"]["recall"]}
    r10 = re.search(r"<tr><td>R@10</td>(.*?)</tr>", section, re.S).group(1)
    cells = re.findall(r"<td class=num>([^<]*)</td>", r10)
    assert cells == [f"{100 * i2t[10]['recall']:.1f}%", f"{100 * i2t[10]['random']:.2f}%",
                     f"{100 * t2i[10]['recall']:.1f}%", f"{100 * t2i[10]['random']:.2f}%"]  # fmt: skip
    assert i2t[10]["random"] == pytest.approx(10 / 250)
    assert f"{result['image_to_text']['mean_rank']:,.1f}" in section
    assert f"{result['image_to_text']['random_mean_rank']:,.1f}" in section
    assert "250 unique" in section and "100.0%*" in section and "K = 500 exceeds the candidates" in section


def test_folders_without_them_say_so(tmp_path):
    html = build_report([tmp_path], tmp_path / "r.html").read_text(encoding="utf-8")
    assert "No zero-shot results" in _section(html, "zeroshot")
    assert "No image-text retrieval results" in _section(html, "retrieval")


def test_a_broken_results_file_is_named_not_fatal(tmp_path):
    (tmp_path / "zeroshot.json").write_text("{oops")
    (tmp_path / "retrieval.json").write_text('{"schema": "greenfm.retrieval/1"}')
    html = build_report([tmp_path], tmp_path / "r.html").read_text(encoding="utf-8")
    assert "zeroshot.json: cannot be read" in _section(html, "summary")
    assert "holds no Recall@K" in _section(html, "retrieval")


def test_a_classifier_readout_has_no_prompt_columns(image_text_run, tmp_path):
    _, metrics, _, _ = image_text_run
    write_zeroshot_results(tmp_path / "run", metrics, prompt_family=None, prompts=None, readout="classifier")
    section = _section(build_report([tmp_path / "run"], tmp_path / "r.html").read_text(encoding="utf-8"), "zeroshot")
    assert "none (classifier readout)" in section and "Positive prompt" not in section
    assert f"{metrics['Nodule'].auroc:.3f}" in section and "Macro mean over 2 of 3 findings" in section
