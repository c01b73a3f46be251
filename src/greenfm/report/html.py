"""``build_report``: one self-contained HTML page from one or more run folders.

Everything is inline: the stylesheet (``report.css``), the figures (base64 PNG)
and one small script that marks ``<body data-images-ok="true">`` once every image
has decoded (for headless-browser checks). A Content-Security-Policy forbids any
network request, so the page renders the same offline, in an e-mail attachment
or on a locked-down hospital PC.

Page order and section ids: ``caveat``, then ``greenfm.report.SECTIONS``.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime, timezone
from html import escape
from importlib.resources import files
from pathlib import Path

import greenfm
from greenfm.errors import BadInputError
from greenfm.report import image_text, results, sections
from greenfm.report.fragments import SECTIONS, block
from greenfm.report.runs import RunArtifacts, read_run

log = logging.getLogger(__name__)

CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'"
)

CAVEAT = (
    '<aside class="caveat" id="caveat" role="note">'
    "<p><strong>Research use only &mdash; not for clinical decisions.</strong> "
    "The models and numbers in this report come from research software. They have not been validated or "
    "approved for patient care and must not be used to diagnose, treat, triage or reassure any patient.</p>"
    "<p>Results describe the test images listed under <em>Data</em> only; performance on other hospitals, "
    "scanners or patient groups may be worse.</p></aside>"
)

# Marks the page once every image has decoded; read by tests through a headless browser.
IMAGE_CHECK = """<script>
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var ok = images.every(function (img) { return img.complete && img.naturalWidth > 0; });
  document.body.setAttribute("data-images-ok", ok ? "true" : "false");
  document.body.setAttribute("data-images-count", String(images.length));
});
</script>"""

_RENDERERS = {
    "summary": sections.summary,
    "label-efficiency": results.label_efficiency,
    "scaling": sections.scaling,
    "comparison": results.comparison,
    "roc-curves": results.roc_curves,
    "finding-metrics": results.finding_metrics,
    "zeroshot": image_text.zeroshot,
    "retrieval": image_text.retrieval,
    "green-card": sections.green_cards,
    "training": sections.training,
    "data-summary": sections.data_summary,
    "curation": sections.curation,
    "config": sections.config,
}


def build_report(run_dirs: list[Path], out: Path, *, title: str | None = None) -> Path:
    """Write one self-contained HTML report about ``run_dirs`` to ``out``; returns ``out``.

    Each folder may hold any subset of the artefacts listed in
    ``greenfm.report.runs``; a section whose inputs are missing says what is missing.
    A folder that does not exist is an error (``BadInputError``).
    """
    if not run_dirs:
        raise BadInputError("give at least one run folder to report on")
    out = Path(out)
    if out.is_dir():
        raise BadInputError("is a folder; give the report's file name (e.g. report.html)", source=str(out))
    names = _unique_names([Path(p) for p in run_dirs])
    runs = [read_run(path, name=name) for path, name in zip(run_dirs, names)]
    page = render(runs, title=title)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    log.info("report written to %s", out)
    return out


def render(runs: list[RunArtifacts], *, title: str | None = None) -> str:
    """The page as a string (see ``build_report``)."""
    title = title or "greenfm evaluation report"
    body = []
    for section_id, _ in SECTIONS:
        try:
            body.append(_RENDERERS[section_id](runs))
        except Exception as exc:  # one broken artefact must not cost the whole report
            log.warning("report: section %s failed (%s: %s)", section_id, type(exc).__name__, exc)
            body.append(
                block(
                    section_id,
                    f'<p class="problem">This section could not be drawn: '
                    f"{escape(type(exc).__name__)}: {escape(str(exc))}</p>",
                )
            )
    nav = "".join(f'<li><a href="#{sid}">{escape(name)}</a></li>' for sid, name in SECTIONS)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    run_list = ", ".join(escape(r.name) for r in runs)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="generator" content="greenfm {escape(greenfm.__version__)}">
<title>{escape(title)}</title>
<style>
{stylesheet()}
</style>
</head>
<body data-images-ok="pending">
<header class="masthead"><div class="wrap">
<div><h1>{escape(title)}</h1><p class="sub">Runs: {run_list}</p></div>
<div class="meta">generated {now}<br>greenfm {escape(greenfm.__version__)}</div>
</div></header>
<nav class="toc" aria-label="sections"><ul>{nav}</ul></nav>
<main class="wrap">
{CAVEAT}
{chr(10).join(body)}
</main>
<footer class="wrap">Generated by greenfm {escape(greenfm.__version__)} on {now}. This file is self-contained:
it loads nothing from the network. Research use only; not for clinical decisions.</footer>
{IMAGE_CHECK}
</body>
</html>
"""


def stylesheet() -> str:
    return files("greenfm.report").joinpath("report.css").read_text(encoding="utf-8")


def _unique_names(paths: list[Path]) -> list[str]:
    """Folder names, with the parent prepended where two runs share a name."""
    paths = [p.parent if p.is_file() else p for p in paths]  # a file stands for its run folder (read_run)
    names = [p.resolve().name for p in paths]
    clashes = {n for n, k in Counter(names).items() if k > 1}
    out = [
        f"{p.resolve().parent.name}/{p.resolve().name}" if p.resolve().name in clashes else p.resolve().name
        for p in paths
    ]
    seen: Counter[str] = Counter()
    unique = []
    for name in out:
        seen[name] += 1
        unique.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return unique
