"""The report's curation part: a curated run's subset (``subset.json``) or a ``greenfm curate`` summary
(``*.curation.json`` in the run folder): cluster sizes, kept rows and keep ratio per cluster, and the
curated run's compute as a fraction of the full-data run (from ``compute.json``)."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

from greenfm.report.fragments import percent, row, run_heading, table
from greenfm.report.runs import RunArtifacts


def curation_records(root: Path) -> list[tuple[str, dict[str, Any]]]:
    """(file name, curation summary) of every curation artefact in a run folder."""
    found = []
    subset = root / "subset.json"
    candidates = ([subset] if subset.is_file() else []) + sorted(root.glob("*.curation.json"))
    for path in candidates:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            found.append((path.name, {"problem": "not readable JSON"}))
            continue
        summary = record.get("curation", record) if path.name == "subset.json" else record
        if path.name == "subset.json":
            summary = {**summary, "subset_rows": record.get("size"), "rows": record.get("dataset_size")}
        found.append((path.name, summary))
    return found


def curation_body(runs: list[RunArtifacts]) -> str:
    """HTML for every run that holds a curation artefact; empty when none does."""
    parts = []
    for run in runs:
        for name, summary in curation_records(run.root):
            if "problem" in summary:
                parts.append(f'<p class="problem">{escape(name)}: {escape(summary["problem"])}</p>')
                continue
            members, kept = summary.get("members_per_cluster") or [], summary.get("kept_per_cluster") or []
            rows = [row([str(k), f"{m:,}", f"{n:,}", percent(n / m if m else None)], {1, 2, 3})
                    for k, (m, n) in enumerate(zip(members, kept))]  # fmt: skip
            size, total = summary.get("subset_rows"), summary.get("rows")
            lead = (f"<p><code>{escape(name)}</code>: subset of {size:,} of {total:,} samples "
                    f"({percent(size / total)}); global batch {summary.get('global_batch')}, K {summary.get('clusters')}, "
                    f"m {summary.get('max_per_cluster')}, thinning {escape(str(summary.get('thinning')))}.</p>"
                    if isinstance(size, int) and isinstance(total, int) and total else "")  # fmt: skip
            compute = run.compute or {}
            if isinstance(compute.get("compute_fraction_of_full_data"), (int, float)):
                lead += (f"<p>Compute of this run: {compute['compute_fraction_of_full_data']:.3f} of the full-data run "
                         f"({escape(str(compute.get('compute_fraction_basis', '')))}); samples trained "
                         f"{compute.get('samples_trained', 0):,} of {compute.get('samples_seen', 0):,} seen.</p>")  # fmt: skip
            parts.append(run_heading(run, True) + lead
                         + table(["Cluster", "Members (seen)", "Kept", "Keep ratio"], rows, {1, 2, 3}))  # fmt: skip
    return "".join(parts)
