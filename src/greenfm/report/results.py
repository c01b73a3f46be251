"""Result sections: label-efficiency curves, ROC curves, per-finding AUROC / AUPRC with CIs.

A finding that could not be scored (one class among the test images, or in training)
is shown with its reason, never as AUROC 0.5.
"""

from __future__ import annotations

from html import escape
from typing import Any

import numpy as np
import pandas as pd

from greenfm.report.fragments import block, figure, is_number, metric_with_ci, missing, percent, row, run_heading, table
from greenfm.report.runs import RunArtifacts

# -- label efficiency -------------------------------------------------------------------------


def label_efficiency(runs: list[RunArtifacts]) -> str:
    return _per_run_section(
        runs, "label-efficiency", "label_efficiency", _label_efficiency_run,
        absent="No label-efficiency results in these runs (<code>label_efficiency.csv</code>, written by "
        "<code>greenfm evaluate label-efficiency</code>). They show how test AUROC grows with the "
        "share of labelled training patients.",
        lead="How test performance depends on the number of labelled training patients.",
    )  # fmt: skip


def _label_efficiency_run(run: RunArtifacts, many: bool) -> str:
    from greenfm.report.label_efficiency import curve_summary, fraction_label
    from greenfm.report.plots import label_efficiency_plot

    curves = curve_summary(run.label_efficiency)
    if curves.empty:
        return run_heading(run, True) + missing("The label-efficiency file has no scored rows.")
    table_ = run.label_efficiency
    macro = table_[table_["finding"] == "macro"]
    seeds = macro if not macro.empty else None
    uri = label_efficiency_plot(curves, seeds)
    rows = [
        row(
            [
                escape(str(r["mode"])),
                escape(fraction_label(r)),
                str(int(r["n_seeds"])),
                f"{r['auroc_mean']:.3f}"
                + (
                    f' <span class="ci">(seeds {r["auroc_min"]:.3f}&ndash;{r["auroc_max"]:.3f})</span>'
                    if r["n_seeds"] > 1
                    else ""
                ),
                metric_with_ci(None, None)
                if not is_number(r["ci_low"])
                else f"{r['ci_low']:.3f}&ndash;{r['ci_high']:.3f}",
            ],
            numeric={1, 2, 3, 4},
        )
        for _, r in curves.iterrows()
    ]
    return (
        run_heading(run, many, str(run.sources.get("label_efficiency", "")))
        + figure(
            uri,
            f"label-efficiency curves of {run.name}",
            "Lines: macro test AUROC averaged over seeds; shaded bands: 95% patient-bootstrap interval "
            "(test-set variability, averaged over seeds); dots: individual seeds (training variability).",
        )
        + table(["Mode", "Labels used", "Seeds", "Macro AUROC (seed range)", "95% CI"], rows, numeric={1, 2, 3, 4})
    )


def _per_run_section(runs, section_id: str, attribute: str, render_run, *, absent: str, lead: str) -> str:
    """A section drawn run by run for the runs that hold ``attribute``; ``absent`` says what is missing."""
    found = [r for r in runs if getattr(r, attribute) is not None]
    if not found:
        return block(section_id, missing(absent))
    return block(section_id, "".join(render_run(run, len(found) > 1) for run in found), lead)


# -- model comparison ---------------------------------------------------------------------------


def comparison(runs: list[RunArtifacts]) -> str:
    return _per_run_section(
        runs, "comparison", "comparison", _comparison_run,
        absent="No model comparison in these runs (<code>study_comparison.json</code>, written by "
        "<code>greenfm evaluate compare STUDY_A STUDY_B --out FOLDER</code>). It says whether one model "
        "beats another at each label fraction, with a paired confidence interval.",
        lead="Is one model better than the other, cell by cell, on the same patients?",
    )  # fmt: skip


def _comparison_run(run: RunArtifacts, many: bool) -> str:
    from greenfm.report.plots import difference_plot

    data = run.comparison
    name_a, name_b = str(data.get("name_a", "A")), str(data.get("name_b", "B"))
    cells = [r for r in data.get("rows") or [] if isinstance(r, dict)]
    if not cells:
        return run_heading(run, True) + missing("The comparison file has no rows.")
    rows = []
    for r in cells:
        ci = r.get("difference_ci")
        sd = r.get("seed_sd")
        verdict = {"b better": f"{name_b} better", "a better": f"{name_a} better"}.get(r.get("verdict"),
                                                                                     r.get("verdict", ""))  # fmt: skip
        rows.append(row([
            escape(str(r.get("mode"))),
            f"{100 * float(r.get('fraction', 0)):g}% ({float(r.get('n_train_images', 0)):.0f} images)",
            f"{r['auroc_a']:.3f}" if is_number(r.get("auroc_a")) else "&ndash;",
            f"{r['auroc_b']:.3f}" if is_number(r.get("auroc_b")) else "&ndash;",
            (f"{r['difference']:+.3f}" if is_number(r.get("difference")) else "&ndash;")
            + (f' <span class="ci">({ci[0]:+.3f} to {ci[1]:+.3f})</span>' if ci else ""),
            f"{sd:.3f}" if is_number(sd) else "&ndash;",
            escape(str(verdict)),
        ], numeric={2, 3, 4, 5}))  # fmt: skip
    return (
        run_heading(run, many, str(run.sources.get("comparison", "")))
        + f"<p><strong>A</strong> = {escape(name_a)}, <strong>B</strong> = {escape(name_b)}; macro test AUROC, "
        f"mean over {escape(str(max(len(r.get('seeds') or []) for r in cells)))} seed(s), on "
        f"{escape(str(data.get('n_test_images', '?')))} test images of "
        f"{escape(str(data.get('n_test_patients', '?')))} patients.</p>"
        + figure(
            difference_plot(cells, name_a, name_b),
            f"difference in macro AUROC, {name_b} minus {name_a}",
            f"Dots: mean difference {escape(name_b)} &minus; {escape(name_a)} over seeds; bars: paired 95% "
            "interval (shared patient resamples, seeds drawn with replacement). A bar clear of 0 is a "
            "difference the test set and the seeds support.",
        )
        + table(["Mode", "Labels used (images)", f"A: {escape(name_a)}", f"B: {escape(name_b)}",
                 "B &minus; A (95% CI)", "Seed sd", "Verdict"], rows, numeric={2, 3, 4, 5})  # fmt: skip
    )


# -- ROC curves -------------------------------------------------------------------------------


def roc_curves(runs: list[RunArtifacts]) -> str:
    from greenfm.report.plots import roc_curve_of, roc_grid

    curves: dict[str, list] = {}
    skipped: dict[str, str] = {}
    notes = []
    for run in runs:
        table_ = run.predictions
        if table_ is None:
            notes.append(
                missing(
                    f"{escape(run.name)}: no per-image test predictions (<code>predictions.parquet</code>, "
                    "written by <code>greenfm probe --out</code>), so no ROC curves."
                )
            )
            continue
        test = table_[table_["split"] == "test"]
        if test.empty:
            notes.append(missing(f"{escape(run.name)}: the predictions hold no test-split rows."))
            continue
        for finding, group in test.groupby("finding", sort=False):
            curve = roc_curve_of(run.name, group["label"].to_numpy(), group["score"].to_numpy())
            if isinstance(curve, str):
                skipped.setdefault(finding, curve)
            else:
                curves.setdefault(finding, []).append(curve)
    for run in runs:  # findings the evaluation itself skipped have no predictions at all
        for f in (run.evaluation or {}).get("findings") or []:
            if f.get("skipped") and f.get("name") not in curves:
                skipped.setdefault(str(f.get("name")), str(f["skipped"]))
    for finding in curves:
        skipped.pop(finding, None)
    body = "".join(notes)
    if curves or skipped:
        uri = roc_grid(curves, skipped)
        body = (
            figure(
                uri,
                "ROC curves per finding",
                "Sensitivity against 1 - specificity on the test split, one panel per finding; the dashed "
                "diagonal is chance. A finding that could not be scored shows the reason instead.",
            )
            + body
        )
    if skipped:
        listed = "; ".join(f"{escape(name)} ({escape(reason)})" for name, reason in skipped.items())
        body += f'<p class="lead">Not scored: {listed}.</p>'
    return block("roc-curves", body, "Each curve traces every threshold of the model's score.")


# -- per-finding metrics ------------------------------------------------------------------------


def finding_metrics(runs: list[RunArtifacts]) -> str:
    parts = []
    numeric = {1, 2, 3, 4, 5}
    header = ["Finding", "Test images", "Positives", "Prevalence", "AUROC (95% CI)", "AUPRC (95% CI)"]
    for run in runs:
        if run.evaluation_source == "zeroshot":  # shown with its prompts in its own section
            parts.append(run_heading(run, len(runs) > 1) + '<p class="lead">Zero-shot test metrics: see '
                         '<a href="#zeroshot">Zero-shot classification</a>.</p>')  # fmt: skip
            continue
        ev = run.evaluation
        if ev is None and run.predictions is not None:
            ev = _metrics_from_predictions(run.predictions)
            source = "computed from predictions; no confidence intervals (probe.json / finetune.json absent)"
        else:
            source = str(run.sources.get(run.evaluation_source or "", ""))
        if ev is None:
            parts.append(
                run_heading(run, len(runs) > 1)
                + missing(
                    f"{escape(run.name)}: no test metrics (<code>finetune.json</code> from fine-tuning or "
                    "<code>probe.json</code> from <code>greenfm probe</code>)."
                )
            )
            continue
        rows = []
        for f in ev.get("findings") or []:
            if f.get("skipped"):
                rows.append(
                    row(
                        [
                            escape(str(f.get("name"))),
                            str(f.get("n", "")),
                            str(f.get("n_positive", "")),
                            percent(f.get("prevalence")),
                            f"skipped: {escape(str(f['skipped']))}",
                            "&ndash;",
                        ],
                        numeric,
                        cls="skipped",
                    )
                )
                continue
            rows.append(
                row(
                    [
                        escape(str(f.get("name"))),
                        str(f.get("n", "")),
                        str(f.get("n_positive", "")),
                        percent(f.get("prevalence")),
                        metric_with_ci(f.get("auroc"), f.get("auroc_ci")),
                        metric_with_ci(f.get("auprc"), f.get("auprc_ci")),
                    ],
                    numeric,
                )
            )
        rows.append(
            row(
                [
                    f"Macro mean over {ev.get('n_evaluable')} of {ev.get('n_classes')} findings",
                    "",
                    "",
                    "",
                    metric_with_ci(ev.get("macro_auroc"), ev.get("macro_auroc_ci")),
                    metric_with_ci(ev.get("macro_auprc"), ev.get("macro_auprc_ci")),
                ],
                numeric,
                cls="macro",
            )
        )
        boot = ev.get("bootstrap") if isinstance(ev.get("bootstrap"), dict) else None
        note = ""
        if boot:
            note = (
                f'<p class="lead">Intervals: {boot.get("n_resamples")} {escape(str(boot.get("cluster")))}-level '
                f"bootstrap resamples of the test set ({boot.get('n_clusters')} clusters, seed {boot.get('seed')}, "
                f"{escape(str(boot.get('method', 'percentile')))}).</p>"
            )
        parts.append(run_heading(run, True, source) + table(header, rows, numeric) + note)
    return block("finding-metrics", "".join(parts), "Test-split discrimination per finding, with prevalence.")


def _metrics_from_predictions(predictions: pd.DataFrame) -> dict[str, Any] | None:
    """Point AUROC / AUPRC per finding from per-image test scores (no intervals)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    test = predictions[predictions["split"] == "test"]
    if test.empty:
        return None
    findings = []
    for name, group in test.groupby("finding", sort=False):
        y, s = group["label"].to_numpy(dtype=float), group["score"].to_numpy(dtype=float)
        keep = np.isfinite(y) & (y >= 0) & np.isfinite(s)
        y, s = y[keep], s[keep]
        n, pos = len(y), int((y == 1).sum())
        entry = {"name": name, "n": n, "n_positive": pos, "prevalence": pos / n if n else None}
        if n == 0 or pos in (0, n):
            entry["skipped"] = "no labelled images" if n == 0 else "only one class present"
        else:
            entry.update(auroc=float(roc_auc_score(y, s)), auprc=float(average_precision_score(y, s)))
        findings.append(entry)
    scored = [f for f in findings if not f.get("skipped")]
    return {
        "findings": findings,
        "n_evaluable": len(scored),
        "n_classes": len(findings),
        "macro_auroc": float(np.mean([f["auroc"] for f in scored])) if scored else None,
        "macro_auprc": float(np.mean([f["auprc"] for f in scored])) if scored else None,
    }
