"""The report's other sections: summary, green card, training curves, data and configuration.

Every section renders for any subset of artefacts: what is absent is named, with the
step that would produce it, in a ``.missing`` note instead of a figure or a table.
"""

from __future__ import annotations

import json
from html import escape

import numpy as np

from greenfm.report.fragments import block, figure, is_number, metric_with_ci, missing, percent, row, run_heading, table
from greenfm.report.green_card import green_card
from greenfm.report.runs import RunArtifacts, describe_data

# -- summary --------------------------------------------------------------------------------


def summary(runs: list[RunArtifacts]) -> str:
    rows = []
    for run in runs:
        ev = run.evaluation
        macro = metric_with_ci(ev.get("macro_auroc"), ev.get("macro_auroc_ci")) if ev else _elsewhere(run)
        scored = f"{ev.get('n_evaluable')}/{ev.get('n_classes')}" if ev else "&ndash;"
        card = {item.key: item for item in green_card(run.compute, n_parameters=run.n_parameters, record=run.record)}
        rows.append(
            row(
                [
                    f"<strong>{escape(run.name)}</strong>",
                    escape(_what(run)),
                    escape(run.encoder_name or "unknown"),
                    macro,
                    scored,
                    *(escape(card[k].value) for k in ("device_hours", "energy_kwh", "co2_kg")),
                ],
                numeric={3, 4, 5, 6, 7},
            )
        )
    header = [
        "Run",
        "What",
        "Backbone",
        "Test macro AUROC (95% CI)",
        "Findings scored",
        "Device-hours",
        "Energy",
        "CO2",
    ]
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
    return block(
        "summary",
        table(header, rows, numeric={3, 4, 5, 6, 7}) + problems + explain,
        f"{len(runs)} run(s). Test results, compute and data for each are detailed below.",
    )


# -- data scaling -------------------------------------------------------------------------------


def scaling(runs: list[RunArtifacts]) -> str:
    """The data-scaling section (``greenfm.report.scaling``): curves, fits and paired differences."""
    from greenfm.report.scaling import scaling_body

    body = scaling_body(runs) or missing("No scaling study (<code>scaling.json</code> from "
                                         "<code>greenfm scaling</code>).")
    return block("scaling", body, "Metric against training-set size at equal steps, with fits and paired differences.")


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
        note = (
            ""
            if run.compute is not None
            else missing("No <code>compute.json</code>: the engine writes it when training ends.")
        )
        raw = ""
        if run.compute is not None:
            raw = (
                f"<details><summary>Full compute ledger (compute.json)</summary><pre>"
                f"{escape(json.dumps({k: v for k, v in run.compute.items() if k != 'run'}, indent=2, default=str))}"
                f"</pre></details>"
            )
        cards.append(f'<div class="card"><h3>{escape(run.name)}</h3>{note}<dl>{"".join(entries)}</dl>{raw}</div>')
    lead = (
        "What training cost. Energy and CO2 are measured or estimated by codecarbon / NVML; a quantity "
        "that could not be measured is shown as <em>unavailable</em>, never as zero."
    )
    return block("green-card", f'<div class="cards">{"".join(cards)}</div>', lead)


# -- training curves ----------------------------------------------------------------------------


def training(runs: list[RunArtifacts]) -> str:
    from greenfm.report.plots import training_curve

    series = {}
    for run in runs:
        by_kind = {}
        for kind in ("step", "epoch"):  # epoch means stand in where few steps were logged
            points = [(r.get("step"), r.get("loss")) for r in run.metrics if r.get("type") == kind]
            by_kind[kind] = [(x, y) for x, y in points if is_number(x) and is_number(y)]
        points = max(by_kind.values(), key=len)
        if points:
            arr = np.asarray(points, dtype=float)
            series[run.name] = (arr[:, 0], arr[:, 1])
    if not series:
        return block("training", missing("No training curves (<code>metrics.jsonl</code>) in these runs."))
    absent = [r.name for r in runs if r.name not in series]
    note = missing(f"No training steps logged for: {escape(', '.join(absent))}.") if absent else ""
    return block(
        "training",
        figure(
            training_curve(series),
            "training loss per step",
            "Training loss as logged in metrics.jsonl (epoch means where fewer steps were logged).",
        )
        + note,
    )


# -- data ---------------------------------------------------------------------------------------


def data_summary(runs: list[RunArtifacts]) -> str:
    parts = []
    for run in runs:
        facts = describe_data(run)
        rows: list[tuple[str, str]] = []
        rows.append(
            ("Manifest hash", f"<code>{escape(facts.manifest_hash)}</code>" if facts.manifest_hash else "not recorded")
        )
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
            rows.append(
                (
                    "Hash check",
                    f"{escape(facts.hash_of)} match the run's recorded hash" if facts.hash_of != "the file"
                    else "the file matches the run"
                    if facts.hash_matches
                    else f"<strong>differs</strong>: the file now hashes to <code>{escape(str(facts.current_hash))}"
                    "</code>",
                )
            )
        counts = facts.probe_counts
        for split in ("train", "val", "test"):
            if f"n_{split}_images" in counts:
                rows.append(
                    (
                        f"Probe {split}",
                        f"{counts[f'n_{split}_images']:,} images, {counts.get(f'n_{split}_patients', 0):,} patients",
                    )
                )
        if facts.training_images is not None:
            rows.append(("Training set of this run", f"{facts.training_images:,} images"))
        body = "".join(f'<tr><th scope="row">{escape(k)}</th><td>{v}</td></tr>' for k, v in rows)
        extra = ""
        if facts.findings:
            label_rows = [
                row(
                    [
                        escape(name),
                        f"{pos:,}",
                        f"{neg:,}",
                        f"{unc:,}",
                        f"{unk:,}",
                        percent(pos / (pos + neg) if pos + neg else None),
                    ],
                    {1, 2, 3, 4, 5},
                )
                for name, pos, neg, unc, unk in facts.findings
            ]
            extra = (
                "<details><summary>Labels per finding (whole manifest)</summary>"
                + table(
                    ["Finding", "Positive", "Negative", "Uncertain", "Unknown", "Prevalence"],
                    label_rows,
                    {1, 2, 3, 4, 5},
                )
                + "</details>"
            )
        parts.append(run_heading(run, True) + f'<table class="facts"><tbody>{body}</tbody></table>' + extra)
    facts_all = [describe_data(run) for run in runs]
    per_image = [f for f in facts_all if f.image_level_patients]
    if per_image:
        lead = ("What the model was trained and tested on. The data carry no patient ids: each image is its own "
                "patient, so images of one person may sit in both training and test.")  # fmt: skip
    else:
        lead = ("What the model was trained and tested on. Patients are split, never images, so no patient is in "
                "both training and test.")  # fmt: skip
    return block("data-summary", "".join(parts), lead)


def curation(runs: list[RunArtifacts]) -> str:
    """The curation section (``greenfm.report.curation``): cluster sizes and keep ratios of curated subsets."""
    from greenfm.report.curation import curation_body

    body = curation_body(runs) or missing("No curated subset (<code>subset.json</code> of a curated recipe, or "
                                          "<code>*.curation.json</code> from <code>greenfm curate</code>).")  # fmt: skip
    return block("curation", body, "Prototype curation: cluster sizes and keep ratio per cluster (METHODS 4.2).")


# -- configuration ------------------------------------------------------------------------------


def config(runs: list[RunArtifacts]) -> str:
    parts = []
    for run in runs:
        path = run.sources.get("config")
        if path is None:
            parts.append(missing(f"{escape(run.name)}: no <code>config.yaml</code>."))
        else:
            parts.append(
                f"<details><summary>{escape(run.name)}: config.yaml</summary>"
                f"<pre>{escape(path.read_text(errors='replace'))}</pre></details>"
            )
        if run.record:
            parts.append(
                f"<details><summary>{escape(run.name)}: run record (stored with checkpoints and exports)"
                f"</summary><pre>{escape(json.dumps(run.record, indent=2, default=str))}</pre></details>"
            )
        if run.missing:
            listed = "".join(f"<li><code>{escape(k)}</code>: {escape(v)}</li>" for k, v in run.missing.items())
            parts.append(
                f"<details><summary>{escape(run.name)}: artefacts not found</summary><ul>{listed}</ul></details>"
            )
    return block("config", "".join(parts), "Exactly what each run was asked to do (click to expand).")


def _elsewhere(run: RunArtifacts) -> str:
    """What the summary's AUROC cell says for a run whose scores are not one test evaluation."""
    if run.label_efficiency is not None:
        return "per fraction: see Label efficiency"
    if (run.root / "scaling.json").is_file():
        return "per size: see Data scaling"
    if run.comparison is not None:
        return "paired differences: see Model comparison"
    return "not evaluated"


def _what(run: RunArtifacts) -> str:
    """The method, with the adaptation mode of a fine-tuning run (``finetune (lora r=8)``)."""
    what = run.method or "unknown"
    classifier = run.record.get("classifier") or (run.finetune or {}).get("classifier")
    if isinstance(classifier, dict) and classifier.get("mode"):
        mode = classifier["mode"] + (f" r={classifier.get('rank')}" if classifier["mode"] == "lora" else "")
        what += f" ({mode})"
    return what
