"""Image-text sections: zero-shot classification (``zeroshot.json``) and retrieval (``retrieval.json``).

Schemas: ``greenfm.evaluate.image_text_results``. Zero-shot AUROC is read against
chance (0.5) and shown with the prompts that produced it; a finding with one class
among the test images is listed as skipped, never scored 0.5. Each Recall@K is shown
beside what a random ranking would reach.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from greenfm.report.fragments import is_number, metric_with_ci, missing, percent, row, run_heading, table
from greenfm.report.results import _per_run_section
from greenfm.report.runs import RunArtifacts

# -- zero-shot ----------------------------------------------------------------------------------


def zeroshot(runs: list[RunArtifacts]) -> str:
    return _per_run_section(
        runs, "zeroshot", "zeroshot", _zeroshot_run,
        absent="No zero-shot results in these runs (<code>zeroshot.json</code>). They score each finding "
        "from the similarity of an image to a positive and a negative text prompt, with no labelled "
        "training images.",
        lead="Each finding scored without training labels: the image's similarity to a positive and a "
        "negative prompt, turned into a probability. AUROC 0.5 is chance.",
    )  # fmt: skip


def _zeroshot_run(run: RunArtifacts, many: bool) -> str:
    data = run.zeroshot
    test = data.get("test") if isinstance(data.get("test"), dict) else None
    heading = run_heading(run, many, str(run.sources.get("zeroshot", "")))
    if test is None:
        return heading + missing(f"{escape(run.name)}: <code>zeroshot.json</code> holds no test metrics.")
    chance = data.get("chance_auroc", 0.5)
    chance = chance if is_number(chance) else 0.5
    prompts = {p.get("finding"): p for p in data.get("prompts") or [] if isinstance(p, dict)}
    with_prompts = bool(prompts)
    numeric = {3, 4, 5, 6, 7} if with_prompts else {1, 2, 3, 4, 5}
    rows = []
    for f in test.get("findings") or []:
        prompt = prompts.get(f.get("name"), {})
        cells = [escape(str(f.get("name")))]
        if with_prompts:
            cells += [_quoted(prompt.get("positive")), _quoted(prompt.get("negative"))]
        cells += [str(f.get("n", "")), str(f.get("n_positive", "")), percent(f.get("prevalence"))]
        if f.get("skipped"):
            rows.append(row([*cells, f"skipped: {escape(str(f['skipped']))}", "&ndash;"], numeric, cls="skipped"))
        else:
            auroc, auprc = (metric_with_ci(f.get(key), f.get(f"{key}_ci")) for key in ("auroc", "auprc"))
            rows.append(row([*cells, auroc, auprc], numeric))
    header = ["Finding"] + (["Positive prompt", "Negative prompt"] if with_prompts else [])
    header += ["Test images", "Positives", "Prevalence", "AUROC (95% CI)", "AUPRC (95% CI)"]
    n_evaluable, n_classes = test.get("n_evaluable"), test.get("n_classes")
    macro = [f"Macro mean over {n_evaluable} of {n_classes} findings", *[""] * (len(header) - 3),
             metric_with_ci(test.get("macro_auroc"), test.get("macro_auroc_ci")),
             metric_with_ci(test.get("macro_auprc"), test.get("macro_auprc_ci"))]  # fmt: skip
    rows.append(row(macro, numeric, cls="macro"))

    family, readout = data.get("prompt_family"), str(data.get("readout", "prompts"))
    facts = [
        ("Readout", escape(readout)),
        ("Prompt family", f"<code>{escape(str(family))}</code>" if family
         else "none (classifier readout)" if readout == "classifier" else "not recorded"),  # fmt: skip
        ("Macro AUROC against chance", _against_chance(test.get("macro_auroc"), test.get("macro_auroc_ci"), chance)),
        ("Findings scored", _scored(n_evaluable, n_classes)),
        ("Test images", escape(str(test.get("n_images", "?")))),
    ]
    facts += _references(data)
    return heading + _facts(facts) + table(header, rows, numeric) + _bootstrap_note(test.get("bootstrap"))


def _against_chance(value: Any, ci: Any, chance: float) -> str:
    text = metric_with_ci(value, ci) + f" vs chance {chance:g}"
    if not (isinstance(ci, (list, tuple)) and len(ci) == 2 and all(is_number(v) for v in ci)):
        return text + " (no interval)"
    if ci[0] > chance:
        return text + ": above chance (the 95% interval excludes it)"
    if ci[1] < chance:
        return text + ": <strong>below chance</strong> (the 95% interval excludes it)"
    return text + ": not distinguishable from chance (the 95% interval covers it)"


def _scored(n_evaluable: Any, n_classes: Any) -> str:
    if not (isinstance(n_evaluable, int) and isinstance(n_classes, int)):
        return "&ndash;"
    skipped = n_classes - n_evaluable
    return f"{n_evaluable} of {n_classes}" + (f"; {skipped} skipped (one class or no labels)" if skipped else "")


def _quoted(text: Any) -> str:
    if text is None:
        return "&ndash;"
    return f"&ldquo;{escape(str(text))}&rdquo;" if str(text) else "<em>(empty text)</em>"


# -- retrieval ----------------------------------------------------------------------------------


def retrieval(runs: list[RunArtifacts]) -> str:
    return _per_run_section(
        runs, "retrieval", "retrieval", _retrieval_run,
        absent="No image-text retrieval results in these runs (<code>retrieval.json</code>). They say how "
        "often a report finds its own image among the top K, and the other way round.",
        lead="How often the right text (or image) is among the K most similar, by cosine similarity of "
        "the two embeddings, beside what a random ranking would reach.",
    )  # fmt: skip


def _retrieval_run(run: RunArtifacts, many: bool) -> str:
    data = run.retrieval
    heading = run_heading(run, many, str(run.sources.get("retrieval", "")))
    i2t = data.get("image_to_text") if isinstance(data.get("image_to_text"), dict) else {}
    t2i = data.get("text_to_image") if isinstance(data.get("text_to_image"), dict) else {}
    by_k: dict[Any, dict[str, dict]] = {}
    for name, direction in (("i2t", i2t), ("t2i", t2i)):
        for entry in direction.get("recall") or []:
            if isinstance(entry, dict):
                by_k.setdefault(entry.get("k"), {})[name] = entry
    if not by_k:
        return heading + missing(f"{escape(run.name)}: <code>retrieval.json</code> holds no Recall@K.")
    numeric = {1, 2, 3, 4}
    rows = []
    for k, entries in sorted(by_k.items(), key=lambda item: item[0] if is_number(item[0]) else 0):
        cells = [f"R@{escape(str(k))}"]
        for name in ("i2t", "t2i"):
            cells += _recall_cells(entries.get(name))
        rows.append(row(cells, numeric))
    for key, label in (("mean_rank", "Mean rank"), ("median_rank", "Median rank")):
        cells = [label]
        for direction in (i2t, t2i):
            value = direction.get(key)
            cells.append(f"{value:,.1f}" if is_number(value) else "&ndash;")
            random = direction.get("random_mean_rank") if key == "mean_rank" else None
            cells.append(f"{random:,.1f}" if is_number(random) else "")
        rows.append(row(cells, numeric, cls="macro" if key == "mean_rank" else ""))
    header = ["", "Image &rarr; text", "Random", "Text &rarr; image", "Random"]
    facts = [
        ("Images", _count(data.get("n_images"))),
        ("Texts (unique)", f"{_count(data.get('n_texts'))} ({_count(data.get('n_unique_texts'))} unique; identical "
                           "texts are one candidate)"),
        ("Similarity", escape(str(data.get("similarity", "cosine")))),
        ("Ranks", "1 is best; " + escape(str(data.get("ties", "")))),
    ]  # fmt: skip
    facts += _references(data)
    capped = [str(k) for k, e in by_k.items() if any(x.get("capped") for x in e.values())]
    note = (
        f'<p class="lead">K = {escape(", ".join(capped))} exceeds the candidates in one direction: capped to '
        "their number (marked *), where every query trivially hits.</p>"
        if capped
        else ""
    )
    explain = (
        '<p class="lead">Image &rarr; text ranks the unique texts for each image; text &rarr; image ranks all '
        "images for each unique text, counting the best-ranked image that carries it. Random: the expected "
        "recall of a random ranking (K / candidates one way; 1 &minus; C(N&minus;m, K) / C(N, K) averaged "
        "over texts with m images each, the other way), and its expected mean rank.</p>"
    )
    return heading + _facts(facts) + table(header, rows, numeric) + note + explain


def _recall_cells(entry: dict | None) -> list[str]:
    if not entry:
        return ["&ndash;", "&ndash;"]
    mark = "*" if entry.get("capped") else ""
    return [_share(entry.get("recall")) + mark, _share(entry.get("random"))]


def _share(value: Any) -> str:
    """A proportion as a percentage, with more digits for small random baselines."""
    if not is_number(value):
        return "&ndash;"
    return f"{100 * value:.2f}%" if value < 0.1 else f"{100 * value:.1f}%"


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "?"


# -- shared -------------------------------------------------------------------------------------


def _references(data: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for key, label in (("model", "Model"), ("data", "Data")):
        value = data.get(key)
        if value not in (None, "", {}):
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            out.append((label, f"<code>{escape(text)}</code>"))
    return out


def _facts(items: list[tuple[str, str]]) -> str:
    body = "".join(f'<tr><th scope="row">{escape(k)}</th><td>{v}</td></tr>' for k, v in items)
    return f'<table class="facts"><tbody>{body}</tbody></table>'


def _bootstrap_note(boot: Any) -> str:
    if not isinstance(boot, dict):
        return '<p class="lead">No confidence intervals were computed.</p>'
    return (
        f'<p class="lead">Intervals: {boot.get("n_resamples")} {escape(str(boot.get("cluster")))}-level bootstrap '
        f"resamples of the test set ({boot.get('n_clusters')} clusters, seed {boot.get('seed')}, "
        f"{escape(str(boot.get('method', 'percentile')))}).</p>"
    )
