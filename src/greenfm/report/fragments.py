"""Small HTML building blocks shared by the report's sections, and the section list itself."""

from __future__ import annotations

import math
from html import escape
from typing import Any

from greenfm.report.runs import RunArtifacts

# (id, navigation title), in page order
SECTIONS = (
    ("summary", "Summary"),
    ("label-efficiency", "Label efficiency"),
    ("scaling", "Data scaling"),
    ("comparison", "Model comparison"),
    ("roc-curves", "ROC curves"),
    ("finding-metrics", "Per-finding metrics"),
    ("zeroshot", "Zero-shot classification"),
    ("retrieval", "Image-text retrieval"),
    ("green-card", "Compute (green card)"),
    ("training", "Training"),
    ("data-summary", "Data"),
    ("curation", "Data curation"),
    ("config", "Configuration"),
)
TITLES = dict(SECTIONS)


def block(section_id: str, body: str, lead: str = "") -> str:
    lead_html = f'<p class="lead">{lead}</p>' if lead else ""
    heading = f"<h2>{escape(TITLES[section_id])}</h2>"
    return f'<section class="block" id="{section_id}">\n{heading}{lead_html}\n{body}\n</section>'


def missing(text: str) -> str:
    return f'<p class="missing">{text}</p>'


def figure(uri: str, alt: str, caption: str = "") -> str:
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f'<figure><img src="{uri}" alt="{escape(alt)}">{cap}</figure>'


def table(header: list[str], rows: list[str], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th{' class=num' if i in numeric else ''}>{h}</th>" for i, h in enumerate(header))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def row(cells: list[str], numeric: set[int] = frozenset(), cls: str = "") -> str:
    tds = "".join(f"<td{' class=num' if i in numeric else ''}>{c}</td>" for i, c in enumerate(cells))
    return f"<tr{f' class={cls}' if cls else ''}>{tds}</tr>"


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def metric_with_ci(value: Any, ci: Any) -> str:
    if not is_number(value):
        return "&ndash;"
    text = f"{value:.3f}"
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(is_number(v) for v in ci):
        text += f' <span class="ci">({ci[0]:.3f}&ndash;{ci[1]:.3f})</span>'
    return text


def percent(value: Any) -> str:
    return f"{100 * value:.1f}%" if is_number(value) else "&ndash;"


def run_heading(run: RunArtifacts, many: bool, source: str = "") -> str:
    if not many and not source:
        return ""
    src = f'<span class="source">{escape(source)}</span>' if source else ""
    return f"<h3>{escape(run.name)}{src}</h3>"
