"""The report's sections, each an HTML fragment built from the runs' artefacts.

Every section has a stable ``id`` (``SECTIONS``) and renders for any subset of
artefacts: what is absent is named, with the step that would produce it, in a
``.missing`` note instead of a figure or a table.
"""

from __future__ import annotations

import json
import math
from html import escape
from typing import Any

import numpy as np
import pandas as pd

from greenfm.report.green_card import green_card
from greenfm.report.runs import RunArtifacts, describe_data

# (id, navigation title), in page order
SECTIONS = (
    ("summary", "Summary"),
    ("label-efficiency", "Label efficiency"),
    ("roc-curves", "ROC curves"),
    ("finding-metrics", "Per-finding metrics"),
    ("green-card", "Compute (green card)"),
    ("training", "Training"),
    ("data-summary", "Data"),
    ("config", "Configuration"),
)
TITLES = dict(SECTIONS)


def block(section_id: str, body: str, lead: str = "") -> str:
    lead_html = f'<p class="lead">{lead}</p>' if lead else ""
    return f'<section class="block" id="{section_id}">\n<h2>{escape(TITLES[section_id])}</h2>{lead_html}\n{body}\n</section>'


def missing(text: str) -> str:
    return f'<p class="missing">{text}</p>'


def figure(uri: str, alt: str, caption: str = "") -> str:
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f'<figure><img src="{uri}" alt="{escape(alt)}">{cap}</figure>'


def table(header: list[str], rows: list[str], numeric: set[int] = frozenset()) -> str:
    head = "".join(f'<th{" class=num" if i in numeric else ""}>{h}</th>' for i, h in enumerate(header))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def row(cells: list[str], numeric: set[int] = frozenset(), cls: str = "") -> str:
    tds = "".join(f'<td{" class=num" if i in numeric else ""}>{c}</td>' for i, c in enumerate(cells))
    return f'<tr{f" class={cls}" if cls else ""}>{tds}</tr>'


def _num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def metric_with_ci(value: Any, ci: Any) -> str:
    if not _num(value):
        return "&ndash;"
    text = f"{value:.3f}"
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_num(v) for v in ci):
        text += f' <span class="ci">({ci[0]:.3f}&ndash;{ci[1]:.3f})</span>'
    return text


def percent(value: Any) -> str:
    return f"{100 * value:.1f}%" if _num(value) else "&ndash;"


def _run_heading(run: RunArtifacts, many: bool, source: str = "") -> str:
    if not many and not source:
        return ""
    src = f'<span class="source">{escape(source)}</span>' if source else ""
    return f"<h3>{escape(run.name)}{src}</h3>"


# -- summary --------------------------------------------------------------------------------


def summary(runs: list[RunArtifacts]) -> str:
    rows = []
    for run in runs:
        ev = run.evaluation
        macro = metric_with_ci(ev.get("macro_auroc"), ev.get("macro_auroc_ci")) if ev else "not evaluated"
        scored = f"{ev.get('n_evaluable')}/{ev.get('n_classes')}" if ev else "&ndash;"
        card = {item.key: item for item in green_card(run.compute, n_parameters=run.n_parameters, record=run.record)}
        rows.append(row([
            f"<strong>{escape(run.name)}</strong>", escape(run.method or "unknown"), escape(run.encoder_name or "unknown"),
            macro, scored, *(escape(card[k].value) for k in ("device_hours", "energy_kwh", "co2_kg")),
        ], numeric={3, 4, 5, 6, 7}))  # fmt: skip
    header = ["Run", "What", "Backbone", "Test macro AUROC (95% CI)", "Findings scored", "Device-hours", "Energy", "CO2"]
    problems = "".join(f'<p class="problem">{escape(p)}</p>' for run in runs for p in run.problems)
    explain = (
        '<div class="explain">'
        "<p><strong>How to read this.</strong> AUROC is the chance that the model ranks a random image "
        "<em>with</em> a finding above a random image <em>without</em> it: 0.5 is a coin toss, 1.0 is perfect. "
        "The range in brackets is a 95% confidence interval from resampling test patients; a wide range "
        "means few test cases. AUPRC (average precision) should be read against the finding's prevalence, "
        "which is what a model without skill would score.</p>"
        "<p>A finding with only one class among the test images cannot be scored: it is listed as "
        "skipped, never counted as 0.5.</p></div>"
    )
    return block("summary", table(header, rows, numeric={3, 4, 5, 6, 7}) + problems + explain,
                 f"{len(runs)} run(s). Test results, compute and data for each are detailed below.")  # fmt: skip


# -- label efficiency -------------------------------------------------------------------------


def label_efficiency(runs: list[RunArtifacts]) -> str:
    from greenfm.report.label_efficiency import curve_summary
    from greenfm.report.plots import label_efficiency_plot

    found = [r for r in runs if r.label_efficiency is not None]
    if not found:
        body = missing("No label-efficiency results in these runs (<code>label_efficiency.csv</code>, written by "
                       "<code>greenfm evaluate label-efficiency</code>). They show how test AUROC grows with the "
                       "share of labelled training patients.")  # fmt: skip
        return block("label-efficiency", body)
    parts = []
    for run in found:
        curves = curve_summary(run.label_efficiency)
        if curves.empty:
            parts.append(_run_heading(run, True) + missing("The label-efficiency file has no scored rows."))
            continue
        table_ = run.label_efficiency
        macro = table_[table_["finding"] == "macro"]
        seeds = macro if not macro.empty else None
        uri = label_efficiency_plot(curves, seeds)
        rows = [
            row([escape(str(r["mode"])), f"{r['fraction'] * 100:g}%", str(int(r["n_seeds"])),
                 f"{r['auroc_mean']:.3f}" + (f' <span class="ci">(seeds {r["auroc_min"]:.3f}&ndash;{r["auroc_max"]:.3f})</span>'
                                             if r["n_seeds"] > 1 else ""),
                 metric_with_ci(None, None) if not _num(r["ci_low"]) else f"{r['ci_low']:.3f}&ndash;{r['ci_high']:.3f}"],
                numeric={1, 2, 3, 4})
            for _, r in curves.iterrows()
        ]  # fmt: skip
        parts.append(
            _run_heading(run, len(found) > 1, str(run.sources.get("label_efficiency", "")))
            + figure(uri, f"label-efficiency curves of {run.name}",
                     "Lines: macro test AUROC averaged over seeds; shaded bands: 95% patient-bootstrap interval "
                     "(test-set variability, averaged over seeds); dots: individual seeds (training variability).")
            + table(["Mode", "Labels used", "Seeds", "Macro AUROC (seed range)", "95% CI"], rows, numeric={1, 2, 3, 4})
        )  # fmt: skip
    return block("label-efficiency", "".join(parts), "How test performance depends on the number of labelled training patients.")


# -- ROC curves -------------------------------------------------------------------------------


def roc_curves(runs: list[RunArtifacts]) -> str:
    from greenfm.report.plots import roc_curve_of, roc_grid

    curves: dict[str, list] = {}
    skipped: dict[str, str] = {}
    notes = []
    for run in runs:
        table_ = run.predictions
        if table_ is None:
            notes.append(missing(f"{escape(run.name)}: no per-image test predictions (<code>predictions.parquet</code>, "
                                 "written by <code>greenfm probe --out</code>), so no ROC curves."))  # fmt: skip
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
        body = figure(uri, "ROC curves per finding",
                      "Sensitivity against 1 - specificity on the test split, one panel per finding; the dashed "
                      "diagonal is chance. A finding that could not be scored shows the reason instead.") + body  # fmt: skip
    return block("roc-curves", body, "Each curve traces every threshold of the model's score.")


# -- per-finding metrics ------------------------------------------------------------------------


def finding_metrics(runs: list[RunArtifacts]) -> str:
    parts = []
    numeric = {1, 2, 3, 4, 5}
    header = ["Finding", "Test images", "Positives", "Prevalence", "AUROC (95% CI)", "AUPRC (95% CI)"]
    for run in runs:
        ev = run.evaluation
        if ev is None and run.predictions is not None:
            ev = _metrics_from_predictions(run.predictions)
            source = "computed from predictions; no confidence intervals (probe.json / finetune.json absent)"
        else:
            source = str(run.sources.get(run.evaluation_source or "", ""))
        if ev is None:
            parts.append(_run_heading(run, len(runs) > 1) + missing(
                f"{escape(run.name)}: no test metrics (<code>finetune.json</code> from fine-tuning or "
                "<code>probe.json</code> from <code>greenfm probe</code>)."))  # fmt: skip
            continue
        rows = []
        for f in ev.get("findings") or []:
            if f.get("skipped"):
                rows.append(row([escape(str(f.get("name"))), str(f.get("n", "")), str(f.get("n_positive", "")),
                                 percent(f.get("prevalence")), f"skipped: {escape(str(f['skipped']))}", "&ndash;"],
                                numeric, cls="skipped"))  # fmt: skip
                continue
            rows.append(row([escape(str(f.get("name"))), str(f.get("n", "")), str(f.get("n_positive", "")),
                             percent(f.get("prevalence")), metric_with_ci(f.get("auroc"), f.get("auroc_ci")),
                             metric_with_ci(f.get("auprc"), f.get("auprc_ci"))], numeric))  # fmt: skip
        rows.append(row([f"Macro mean over {ev.get('n_evaluable')} of {ev.get('n_classes')} findings", "", "", "",
                         metric_with_ci(ev.get("macro_auroc"), ev.get("macro_auroc_ci")),
                         metric_with_ci(ev.get("macro_auprc"), ev.get("macro_auprc_ci"))], numeric, cls="macro"))  # fmt: skip
        boot = ev.get("bootstrap") if isinstance(ev.get("bootstrap"), dict) else None
        note = ""
        if boot:
            note = (f'<p class="lead">Intervals: {boot.get("n_resamples")} {escape(str(boot.get("cluster")))}-level '
                    f'bootstrap resamples of the test set ({boot.get("n_clusters")} clusters, seed {boot.get("seed")}, '
                    f'{escape(str(boot.get("method", "percentile")))}).</p>')  # fmt: skip
        parts.append(_run_heading(run, True, source) + table(header, rows, numeric) + note)
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


# -- green card ---------------------------------------------------------------------------------


def green_cards(runs: list[RunArtifacts]) -> str:
    cards = []
    for run in runs:
        items = green_card(run.compute, n_parameters=run.n_parameters, record=run.record)
        if run.compute is None:  # one note instead of ten identical "unavailable" lines
            items = [item for item in items if item.key == "parameters" and item.available]
        entries = []
        for item in items:
            cls = "" if item.available else ' class="na"'
            entries.append(f"<dt>{escape(item.label)}</dt><dd{cls}>{escape(item.value)}</dd>")
            if item.detail:
                entries.append(f'<div class="detail">{escape(item.detail)}</div>')
            else:
                entries.append('<div class="detail"></div>')
        note = "" if run.compute is not None else missing("No <code>compute.json</code>: the engine writes it when training ends.")
        raw = ""
        if run.compute is not None:
            raw = (f"<details><summary>Full compute ledger (compute.json)</summary><pre>"
                   f"{escape(json.dumps({k: v for k, v in run.compute.items() if k != 'run'}, indent=2, default=str))}"
                   f"</pre></details>")  # fmt: skip
        cards.append(f'<div class="card"><h3>{escape(run.name)}</h3>{note}<dl>{"".join(entries)}</dl>{raw}</div>')
    lead = ("What training cost. Energy and CO2 are measured or estimated by codecarbon / NVML; a quantity "
            "that could not be measured is shown as <em>unavailable</em>, never as zero.")  # fmt: skip
    return block("green-card", f'<div class="cards">{"".join(cards)}</div>', lead)


# -- training curves ----------------------------------------------------------------------------


def training(runs: list[RunArtifacts]) -> str:
    from greenfm.report.plots import training_curve

    series = {}
    for run in runs:
        steps = [(r.get("step"), r.get("loss")) for r in run.metrics if r.get("type") == "step"]
        steps = [(s, v) for s, v in steps if _num(s) and _num(v)]
        if steps:
            arr = np.asarray(steps, dtype=float)
            series[run.name] = (arr[:, 0], arr[:, 1])
    if not series:
        return block("training", missing("No training curves (<code>metrics.jsonl</code>) in these runs."))
    absent = [r.name for r in runs if r.name not in series]
    note = missing(f"No training steps logged for: {escape(', '.join(absent))}.") if absent else ""
    return block("training", figure(training_curve(series), "training loss per step",
                                    "Training loss as logged in metrics.jsonl.") + note)  # fmt: skip


# -- data ---------------------------------------------------------------------------------------


def data_summary(runs: list[RunArtifacts]) -> str:
    parts = []
    for run in runs:
        facts = describe_data(run)
        rows: list[tuple[str, str]] = []
        rows.append(("Manifest hash", f"<code>{escape(facts.manifest_hash)}</code>" if facts.manifest_hash else "not recorded"))
        if facts.manifest_path is None:
            rows.append(("Manifest file", "not named in the run's configuration"))
        else:
            problem = f" ({escape(facts.manifest_problem)})" if facts.manifest_problem else ""
            rows.append(("Manifest file", f"<code>{escape(str(facts.manifest_path))}</code>{problem}"))
        if facts.rows is not None:
            rows.append(("Images (rows)", f"{facts.rows:,}"))
            rows.append(("Patients", f"{facts.patients:,}"))
        if facts.splits:
            per = [f"{name} {n:,} images / {p:,} patients" for name, (n, p) in facts.splits.items()]
            rows.append(("Splits", escape("; ".join(per))))
        if facts.hash_matches is not None:
            rows.append(("Hash check", "the file matches the run" if facts.hash_matches else
                         f"<strong>differs</strong>: the file now hashes to <code>{escape(str(facts.current_hash))}</code>"))  # fmt: skip
        counts = facts.probe_counts
        for split in ("train", "val", "test"):
            if f"n_{split}_images" in counts:
                rows.append((f"Probe {split}", f"{counts[f'n_{split}_images']:,} images, "
                                              f"{counts.get(f'n_{split}_patients', 0):,} patients"))  # fmt: skip
        if facts.training_images is not None:
            rows.append(("Training set of this run", f"{facts.training_images:,} images"))
        body = "".join(f'<tr><th scope="row">{escape(k)}</th><td>{v}</td></tr>' for k, v in rows)
        extra = ""
        if facts.findings:
            label_rows = [row([escape(name), f"{pos:,}", f"{neg:,}", f"{unc:,}", f"{unk:,}",
                               percent(pos / (pos + neg) if pos + neg else None)], {1, 2, 3, 4, 5})
                          for name, pos, neg, unc, unk in facts.findings]  # fmt: skip
            extra = ("<details><summary>Labels per finding (whole manifest)</summary>"
                     + table(["Finding", "Positive", "Negative", "Uncertain", "Unknown", "Prevalence"], label_rows,
                             {1, 2, 3, 4, 5}) + "</details>")  # fmt: skip
        parts.append(_run_heading(run, True) + f'<table class="facts"><tbody>{body}</tbody></table>' + extra)
    lead = ("What the model was trained and tested on. Patients are split, never images, so no patient is in "
            "both training and test.")  # fmt: skip
    return block("data-summary", "".join(parts), lead)


# -- configuration ------------------------------------------------------------------------------


def config(runs: list[RunArtifacts]) -> str:
    parts = []
    for run in runs:
        path = run.sources.get("config")
        if path is None:
            parts.append(missing(f"{escape(run.name)}: no <code>config.yaml</code>."))
        else:
            parts.append(f"<details><summary>{escape(run.name)}: config.yaml</summary>"
                         f"<pre>{escape(path.read_text(errors='replace'))}</pre></details>")  # fmt: skip
        if run.record:
            parts.append(f"<details><summary>{escape(run.name)}: run record (stored with checkpoints and exports)"
                         f"</summary><pre>{escape(json.dumps(run.record, indent=2, default=str))}</pre></details>")  # fmt: skip
        if run.missing:
            listed = "".join(f"<li><code>{escape(k)}</code>: {escape(v)}</li>" for k, v in run.missing.items())
            parts.append(f"<details><summary>{escape(run.name)}: artefacts not found</summary><ul>{listed}</ul></details>")
    return block("config", "".join(parts), "Exactly what each run was asked to do (click to expand).")
