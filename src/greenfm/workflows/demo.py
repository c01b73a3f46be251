"""``greenfm demo``: the whole pipeline on built-in phantoms, on a laptop CPU, in minutes.

1. phantoms: a *source* site (the starting model's population) and a *target* site
   (the hospital adapting it), with different acquisition chains (``data.phantoms.sites``);
2. patient-level train / val / test split of the target site, and the decode-once cache;
3. the starting model: no weights can be downloaded here, so a tiny ViT is trained
   with labels on the source site (``warm_start``), standing in for the general-domain
   model a real user passes with ``--init`` (a DINOv2 checkpoint);
4. token-reconstruction continual pretraining on the target site's *unlabelled* train
   split, starting from that model (its frozen copy is the teacher);
5. embed the target site with both models, fit the same linear probes, and compare
   test AUROC per finding with patient-bootstrap CIs and a paired CI of the difference;
6. label efficiency: linear probe, LoRA and full fine-tuning at 1 / 10 / 100% of the labels;
7. image-text: UniCL from the adapted model on the target site's reports, zero-shot and retrieval;
8. 3-D: GreenRFM-lite (``r3d_18_lite``) on CT phantoms, image, text and align stages, zero-shot
   (``workflows.demo_greenrfm``); then the HTML report.

Everything is written under ``out``; a re-run with the same setting reuses finished
stages and reproduces the same numbers; a different setting starts the folder afresh.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

import greenfm
from greenfm.workflows.demo_setting import FULL, QUICK, DemoSetting  # noqa: F401  (the demo's settings)
from greenfm.workflows.demo_output import (
    StageClock,
    print_comparison,
    print_header,
    print_summary,
    quiet_engine_log,
    torch_threads,
)

if TYPE_CHECKING:
    from greenfm.workflows.demo_beside import BesideStage

SETTING_FILE = "demo_setting.json"
RESULTS_FILE = "demo_results.json"
_MANAGED = ("data", "cache", "runs", "embeddings", "greenrfm", SETTING_FILE, RESULTS_FILE, "report.html")


@dataclass
class DemoResult:
    """What the demo measured (``demo_results.json`` holds the same)."""

    out: Path
    setting: DemoSetting
    starting_model: str
    comparison: Any  # workflows.paired_comparison.PairedComparison
    pretrain_compute: dict[str, Any]
    timings: dict[str, dict[str, float]]
    results_path: Path
    report_path: Path | None = None
    label_efficiency: Any = None  # workflows.label_efficiency_results.LabelEfficiencyResult
    label_efficiency_pairs: list[dict[str, Any]] | None = None  # workflows.label_efficiency_pairs.paired_modes
    image_text: dict[str, Any] | None = None  # demo_stages.image_text's summary
    greenrfm: dict[str, Any] | None = None  # demo_greenrfm.run_greenrfm_demo's result

    @property
    def macro_gain(self) -> float | None:
        """Adapted minus starting macro test AUROC."""
        return self.comparison.macro.difference


def run_demo(out: str | Path, *, quick: bool = False, setting: DemoSetting | None = None,
             console: Console | None = None) -> DemoResult:  # fmt: skip
    """Run the demo into ``out`` (``quick``: a < 1 minute version for tests); see the module docstring."""
    setting = setting or (QUICK if quick else FULL)
    console = console or Console()
    if not console.is_terminal and console.width < 110:  # a pipe or log file gets rich's 80; tables need ~110
        console = Console(file=console.file, width=120)
    out = Path(out)
    _prepare(out, setting, console)
    clock = StageClock()
    beside = None
    if setting.greenrfm and setting.greenrfm_beside and (os.cpu_count() or 1) >= 2:
        from greenfm.workflows.demo_beside import BesideStage

        beside = BesideStage(out / "greenrfm", quick=setting.name == "quick", seed=setting.seed)
        console.print(f"[dim]the 3-D stage (8) runs in a second process beside stages 1-7; its output goes to "
                      f"{out / 'greenrfm' / 'stage.log'}[/dim]")  # fmt: skip
    try:
        return _run_stages(out, setting, console, clock, beside)
    finally:
        if beside is not None:
            beside.stop()  # only does anything when a stage before 8 failed


def _run_stages(out: Path, setting: DemoSetting, console: Console, clock: StageClock,
                beside: BesideStage | None) -> DemoResult:  # fmt: skip
    from greenfm.workflows import demo_stages as stages
    from greenfm.workflows.demo_greenrfm import format_greenrfm_demo, run_greenrfm_demo

    with torch_threads(console), quiet_engine_log():
        print_header(console, "1. Phantom data", "a source site for the starting model, a target site to adapt to")
        with clock("phantoms"):
            data = stages.make_data(out, setting, console)
        print_header(console, "2. Patient-level split and decode-once cache")
        with clock("split + cache"):
            data = stages.split_and_cache(out, data, setting, console)
        print_header(console, "3. Starting model", f"supervised warm start on site {setting.source_site}")
        with clock("starting model"):
            start_dir, description = stages.starting_model(out, data, setting, console)
        print_header(console, "4. Token-reconstruction continual pretraining",
                     f"site {setting.target_site} train split, unlabelled; teacher = the starting model")  # fmt: skip
        with clock("token reconstruction"):
            adapted_dir, compute = stages.token_reconstruction(out, data, start_dir, setting, console)
        print_header(console, "5. Embed and probe: starting vs adapted model", f"site {setting.target_site} test split")
        with clock("embed + probe"):
            comparison = stages.embed_and_compare(out, data, start_dir, adapted_dir, setting)
        print_comparison(console, comparison)
        label_efficiency, label_pairs = None, None
        if setting.label_efficiency:
            shares = " / ".join(f"{100 * f:g}%" for f in setting.label_fractions)
            print_header(console, "6. Label efficiency", f"adapted model, linear / LoRA / full at {shares} of labels")
            with clock("label efficiency"):
                label_efficiency, label_pairs = stages.label_efficiency(out, data, adapted_dir, setting, console)
        image_text = None
        if setting.image_text:
            print_header(console, "7. Image-text pretraining and zero-shot",
                         f"unicl on site {setting.target_site}'s train reports; zero-shot on its test split")  # fmt: skip
            with clock("image-text"):
                image_text = stages.image_text(out, data, adapted_dir, setting, console)
        greenrfm = None
        if setting.greenrfm:
            print_header(console, "8. GreenRFM-lite in 3-D", "CT phantoms: image, text and align stages (r3d_18_lite, "
                         "k4s4); zero-shot on the test split")  # fmt: skip
            with clock("3-D greenrfm"):
                if beside is not None:
                    greenrfm = beside.wait()
                else:
                    greenrfm = run_greenrfm_demo(out / "greenrfm", quick=setting.name == "quick", seed=setting.seed)
            if beside is not None:
                clock.timings["3-D greenrfm"]["beside_wall_s"] = greenrfm["beside_wall_s"]
                console.print(f"(ran {greenrfm['beside_wall_s']:.1f} s in a second process beside stages 1-7; "
                              f"stage 8 waited {clock.timings['3-D greenrfm']['wall_s']:.1f} s for it)")  # fmt: skip
            for line in format_greenrfm_demo(greenrfm):
                console.print(line)
        with clock("report"):
            extra = [Path(image_text["run"]) / name for name in ("zeroshot", "retrieval")] if image_text else []
            report = stages.report(out, [start_dir, adapted_dir, *extra], label_efficiency, console)

    result = DemoResult(
        out=out, setting=setting, starting_model=description, comparison=comparison, pretrain_compute=compute,
        timings=clock.timings, results_path=out / RESULTS_FILE, report_path=report, label_efficiency=label_efficiency,
        label_efficiency_pairs=label_pairs, image_text=image_text, greenrfm=greenrfm,
    )  # fmt: skip
    _write_results(result)
    print_summary(console, result)
    return result


def _prepare(out: Path, setting: DemoSetting, console: Console) -> None:
    """Keep a folder made with the same setting (finished stages are reused); otherwise start afresh."""
    # Through JSON, so tuples compare equal to the lists a saved setting reads back as.
    wanted = json.loads(json.dumps({"greenfm_version": greenfm.__version__, **asdict(setting)}))
    path = out / SETTING_FILE
    if path.is_file():
        try:
            previous = json.loads(path.read_text())
        except json.JSONDecodeError:
            previous = None
        if previous == wanted:
            console.print(f"[dim]{out}: reusing the stages finished by an earlier run with this setting[/dim]")
            return
        console.print(f"[yellow]{out}: made with another demo setting; removing its demo folders[/yellow]")
        for name in _MANAGED:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(wanted, indent=2) + "\n")


def _write_results(result: DemoResult) -> None:
    from greenfm.evaluate.metrics import json_safe

    data = {
        "greenfm_version": greenfm.__version__,
        "setting": asdict(result.setting),
        "starting_model": result.starting_model,
        "comparison": result.comparison.to_dict(),
        "pretrain_compute": result.pretrain_compute,
        "timings": result.timings,
        "report": str(result.report_path) if result.report_path else None,
        "label_efficiency": _label_efficiency_summary(result.label_efficiency),
        "label_efficiency_pairs": result.label_efficiency_pairs,
        "image_text": {k: v for k, v in (result.image_text or {}).items() if k != "compute"} or None,
        "image_text_compute": (result.image_text or {}).get("compute"),
        "greenrfm": result.greenrfm,
    }
    result.results_path.write_text(json.dumps(json_safe(data), indent=2, default=str) + "\n")


def _label_efficiency_summary(study: Any) -> dict[str, Any] | None:
    if study is None:
        return None
    return {"out": str(study.out), "summary": study.summary.to_dict(orient="records"),
            "skipped_cells": study.skipped_cells}  # fmt: skip
