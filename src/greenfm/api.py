"""greenfm's Python API: one function per CLI verb, with the same arguments.

Heavy modules are imported inside each function, so importing the API is cheap.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

console = Console()


# ----------------------------------------------------------------------------- data


def data_check(data: str | Path, *, skip_bad: bool = False):
    """Validate a manifest and print a summary of rows, patients, splits and labels."""
    from greenfm.data.manifest import load_manifest

    manifest = load_manifest(data, skip_bad=skip_bad)
    console.print(manifest_summary_table(manifest))
    return manifest


def manifest_summary_table(manifest, title: str | None = None) -> Table:
    """A rich table: one row per finding with prevalence, uncertain and unknown counts per split."""
    table = manifest.table
    splits = sorted(table["split"].dropna().unique()) if manifest.has_splits else []
    header = (
        f"{len(table)} rows, {table['patient_id'].nunique()} patients"
        + (f", splits: " + ", ".join(f"{s} {int((table['split'] == s).sum())}" for s in splits) if splits else "")
        + (f", {len(manifest.problems)} skipped" if manifest.problems else "")
        + f", manifest hash {manifest.hash}"
    )
    out = Table(title=title or header, caption=header if title else None)
    for col in ("finding", "positive", "negative", "uncertain", "unknown", "prevalence"):
        out.add_column(col, justify="left" if col == "finding" else "right")
    for finding in manifest.findings:
        values = table[finding]
        pos, neg = int((values == 1).sum()), int((values == 0).sum())
        unc, unk = int((values == -1).sum()), int(values.isna().sum())
        prevalence = pos / (pos + neg) if pos + neg else float("nan")
        out.add_row(finding, str(pos), str(neg), str(unc), str(unk), f"{prevalence:.3f}")
    return out
