"""What the demo prints: section headers, the before/after table, the summary; and its stage clock."""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import time
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.table import Table


VERDICTS = {"b better": "the adapted model is better", "a better": "the starting model is better",
            "no clear difference": "no clear difference", "not evaluable": "not evaluable"}  # fmt: skip


class StageClock:
    """Wall and CPU seconds per stage (CPU: this process and its finished children, all threads)."""

    def __init__(self) -> None:
        self.timings: dict[str, dict[str, float]] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), _cpu_seconds()
        try:
            yield
        finally:
            self.timings[stage] = {"wall_s": time.perf_counter() - wall, "cpu_s": _cpu_seconds() - cpu}

    @property
    def total(self) -> dict[str, float]:
        return {k: sum(t[k] for t in self.timings.values()) for k in ("wall_s", "cpu_s")}


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@contextlib.contextmanager
def torch_threads(console: Console) -> Iterator[None]:
    """One intra-op torch thread for the demo's tiny models, unless ``OMP_NUM_THREADS`` says otherwise.

    A 64-wide ViT on 21 tokens gains little from a second thread, and loses several-fold
    as soon as anything else runs: the threads of each small matrix product then wait
    for each other while descheduled (measured: 84 vs 9 images/s on a shared 2-core VM).
    """
    import torch

    before = torch.get_num_threads()
    if "OMP_NUM_THREADS" not in os.environ and before > 1:
        torch.set_num_threads(1)
        console.print("[dim]one torch thread (tiny models; set OMP_NUM_THREADS to choose)[/dim]")
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def quiet_engine_log() -> Iterator[None]:
    """The demo prints its own headers and results: the engine's per-epoch INFO lines are left to ``train.log``."""
    engine = logging.getLogger("greenfm.engine")
    before = engine.level
    engine.setLevel(max(before, logging.WARNING))
    try:
        yield
    finally:
        engine.setLevel(before)


def print_header(console: Console, title: str, subtitle: str | None = None) -> None:
    console.print()
    console.rule(f"[bold]{title}[/bold]" + (f" [dim]- {subtitle}[/dim]" if subtitle else ""))


def _auroc(value: float | None, ci: tuple[float, float] | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f} ({ci[0]:.3f}-{ci[1]:.3f})" if ci else f"{value:.3f}"


def _delta(row: Any) -> str:
    if row.difference is None:
        return "n/a"
    low, high = row.difference_ci
    colour = "green" if low > 0 else "red" if high < 0 else "white"
    return f"[{colour}]{row.difference:+.3f} ({low:+.3f} to {high:+.3f})[/{colour}]"


def comparison_table(comparison: Any) -> Table:
    """Finding | positives | starting AUROC [CI] | adapted AUROC [CI] | difference [paired CI] | p."""
    table = Table(title=f"test AUROC, patient-bootstrap 95% CIs ({comparison.n_resamples} resamples of "
                        f"{comparison.n_patients} patients, {comparison.n_images} images)")  # fmt: skip
    for column in ("finding", "pos.", "starting model", "adapted (TR)", "difference (paired CI)", "p"):
        table.add_column(column, justify="left" if column == "finding" else "right", no_wrap=True)
    for row in comparison.rows:
        is_macro = row.name == "macro"
        if is_macro:
            table.add_section()
        table.add_row(
            "[bold]macro[/bold]" if is_macro else row.name,
            "" if is_macro else str(row.n_positive),
            _auroc(row.auroc_a, row.ci_a),
            _auroc(row.auroc_b, row.ci_b),
            _delta(row),
            "n/a" if row.p_bootstrap is None else f"{row.p_bootstrap:.3f}",
        )
    return table


def print_comparison(console: Console, comparison: Any) -> None:
    """The before/after table, the Wilcoxon check and a one-line verdict read from the paired CI."""
    console.print(comparison_table(comparison))
    macro = comparison.macro
    console.print(
        "p: two-sided patient-bootstrap p-value of no difference; the same resamples score both models, so the "
        "difference CI is paired (the two models' own CIs overlap far more than the difference varies)."
    )
    wilcoxon = comparison.wilcoxon or {}
    if "p_value" in wilcoxon:
        medians = ", ".join(f"{m['name']} {m['median_auroc']:.3f}" for m in wilcoxon["models"])
        console.print(f"RETFound-Green comparison (100 image resamples, Wilcoxon): median macro AUROC {medians}; "
                      f"p = {wilcoxon['p_value']:.2g} -> {wilcoxon['verdict']} for {wilcoxon['best']}")  # fmt: skip
    verdict = VERDICTS[macro.verdict]
    console.print(f"[bold]macro AUROC {macro.auroc_a:.3f} -> {macro.auroc_b:.3f} ({macro.difference:+.3f}, "
                  f"95% CI {macro.difference_ci[0]:+.3f} to {macro.difference_ci[1]:+.3f}): {verdict}[/bold]"
                  if macro.difference is not None else "[bold]macro AUROC: not evaluable[/bold]")  # fmt: skip
    if wilcoxon.get("verdict") == "win" and macro.verdict == "no clear difference":
        console.print("[dim]The two disagree: a Wilcoxon test over bootstrap replicates makes any consistent "
                      "difference 'significant', however small; the paired CI is the one to read.[/dim]")  # fmt: skip
    console.print("[dim]docs/results.md (Token Reconstruction on phantoms) lists the settings tried and what token "
                  "reconstruction gave in each.[/dim]")  # fmt: skip


def print_summary(console: Console, result: Any) -> None:
    """Stage timings, the headline numbers and where everything was written."""
    print_header(console, "Summary")
    table = Table(title=f"greenfm demo ({result.setting.name}) in {result.out}")
    table.add_column("stage")
    table.add_column("wall", justify="right")
    table.add_column("CPU", justify="right")
    for stage, t in result.timings.items():
        # A stage that ran in a second process shows the wait it cost here; its own run time is named beside it.
        label = f"{stage} (ran {t['beside_wall_s']:.0f} s beside 1-7)" if "beside_wall_s" in t else stage
        table.add_row(label, f"{t['wall_s']:.1f} s", f"{t['cpu_s']:.1f} s")
    total = {k: sum(t[k] for t in result.timings.values()) for k in ("wall_s", "cpu_s")}
    table.add_row("[bold]total[/bold]", f"[bold]{total['wall_s']:.1f} s[/bold]", f"[bold]{total['cpu_s']:.1f} s[/bold]")
    console.print(table)
    macro = result.comparison.macro
    if macro.difference is not None:
        console.print(f"macro test AUROC: starting model {macro.auroc_a:.3f}, after token reconstruction "
                      f"{macro.auroc_b:.3f}; paired difference {macro.difference:+.3f} "
                      f"[{macro.difference_ci[0]:+.3f}, {macro.difference_ci[1]:+.3f}]: "
                      f"{VERDICTS[macro.verdict]}")  # fmt: skip
    compute = result.pretrain_compute
    console.print(f"token reconstruction: {compute.get('samples_seen', '?')} images, "
                  f"{compute.get('optimizer_steps', '?')} steps, {_seconds(compute.get('wall_time_s'))}, "
                  f"energy {_quantity(compute.get('energy_kwh'), 'kWh')}, CO2 {_quantity(compute.get('co2_kg'), 'kg')}")
    pairs = getattr(result, "label_efficiency_pairs", None)
    if pairs:
        from greenfm.workflows.label_efficiency_pairs import format_paired_modes

        console.print("label efficiency, the modes compared at each fraction (macro AUROC, paired 95% CI):")
        for line in format_paired_modes(pairs):
            console.print(f"  {line}", highlight=False)
    image_text = getattr(result, "image_text", None)
    if image_text and image_text.get("zeroshot_macro_auroc") is not None:
        ci = image_text.get("zeroshot_macro_ci")
        ci_text = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
        against = ("above chance" if ci and ci[0] > 0.5 else "not distinguishable from chance") if ci else "no CI"
        r10, chance10 = image_text.get("recall_at_10"), image_text.get("recall_at_10_random")
        retrieval = f"; image-to-report R@10 {r10:.3f} (random {chance10:.3f})" if r10 is not None else ""
        console.print(f"image-text (unicl): zero-shot macro test AUROC {image_text['zeroshot_macro_auroc']:.3f}{ci_text}, "
                      f"{against} (0.5), {image_text['findings_scored']} of {image_text['findings']} findings"
                      f"{retrieval}")  # fmt: skip
    greenrfm = getattr(result, "greenrfm", None)
    if greenrfm:
        from greenfm.workflows.demo_greenrfm import format_greenrfm_demo

        for line in format_greenrfm_demo(greenrfm):
            console.print(line)
    console.print(f"results: {result.results_path}")
    if result.report_path is not None:
        console.print(f"report: {result.report_path}")


def _quantity(value: Any, unit: str) -> str:
    return f"{value:.3g} {unit}" if isinstance(value, (int, float)) else str(value or "unavailable")


def _seconds(value: Any) -> str:
    return f"{value:.1f} s" if isinstance(value, (int, float)) else str(value)
