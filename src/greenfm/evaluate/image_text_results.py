"""The result files of zero-shot classification and image-text retrieval, read by ``greenfm report``.

``zeroshot.json`` (schema ``greenfm.zeroshot/1``):

================  =====================================================================
key               meaning
================  =====================================================================
schema            ``greenfm.zeroshot/1``
greenfm_version   the package version that wrote the file
created           UTC time, ISO 8601
readout           ``prompts`` (softmax over a prompt pair) or ``classifier`` (sigmoid(C z))
prompt_family     the family id (``greenfm.evaluate.prompts``), or null
prompts           ``[{finding, positive, negative}]`` as rendered and embedded
model, data       what was evaluated, on what (free-form references, e.g. a run folder
                  and a manifest hash)
chance_auroc      0.5, what the macro AUROC is read against
test              ``Metrics.to_dict()``: per-finding AUROC / AUPRC with CIs, macro, skipped
extra             anything else the caller records (e.g. ``normalize``, ``text_order``)
================  =====================================================================

``zeroshot_findings.csv`` beside it: ``Metrics.to_frame()`` plus ``positive_prompt`` and
``negative_prompt``, one row per finding.

``retrieval.json`` (schema ``greenfm.retrieval/1``): ``schema``, ``greenfm_version``,
``created``, ``model``, ``data``, ``extra``, and every key of
``greenfm.evaluate.retrieval.retrieval_metrics``'s result at the top level.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import greenfm
from greenfm.errors import BadInputError, ConfigError
from greenfm.evaluate.metrics import Metrics, json_safe
from greenfm.evaluate.zeroshot import CHANCE_AUROC

ZEROSHOT_SCHEMA = "greenfm.zeroshot/1"
RETRIEVAL_SCHEMA = "greenfm.retrieval/1"
ZEROSHOT_FILE = "zeroshot.json"
ZEROSHOT_FINDINGS_FILE = "zeroshot_findings.csv"
RETRIEVAL_FILE = "retrieval.json"
READOUTS = ("prompts", "classifier")


def write_zeroshot_results(
    out_dir: str | Path,
    metrics: Metrics,
    *,
    prompt_family: str | None,
    prompts: Sequence[tuple[str, str]] | Mapping[str, tuple[str, str]] | None,
    readout: str = "prompts",
    model_ref: Any = None,
    data_ref: Any = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``out_dir/zeroshot.json`` and ``zeroshot_findings.csv``; returns the JSON's path.

    ``prompts`` is one (positive, negative) pair per finding of ``metrics``, in its
    order, or a mapping finding -> pair; ``None`` only with ``readout='classifier'``.
    """
    if readout not in READOUTS:
        raise ConfigError(f"unknown zero-shot readout {readout!r}; choose one of {', '.join(READOUTS)}")
    names = [f.name for f in metrics.findings]
    pairs = _prompt_rows(names, prompts, readout)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = {
        "schema": ZEROSHOT_SCHEMA,
        **_stamp(),
        "readout": readout,
        "prompt_family": prompt_family,
        "prompts": pairs,
        "model": model_ref,
        "data": data_ref,
        "chance_auroc": CHANCE_AUROC,
        "test": metrics.to_dict(),
        "extra": dict(extra or {}),
    }
    path = out / ZEROSHOT_FILE
    path.write_text(json.dumps(json_safe(data), indent=2, default=str) + "\n")
    frame = metrics.to_frame()
    by_name = {p["finding"]: p for p in pairs}
    frame["positive_prompt"] = [by_name.get(n, {}).get("positive") for n in names]
    frame["negative_prompt"] = [by_name.get(n, {}).get("negative") for n in names]
    frame.to_csv(out / ZEROSHOT_FINDINGS_FILE, index=False)
    return path


def write_retrieval_results(
    out_dir: str | Path,
    result: Mapping[str, Any],
    *,
    model_ref: Any = None,
    data_ref: Any = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``out_dir/retrieval.json`` from a ``retrieval_metrics`` result; returns its path."""
    for key in ("image_to_text", "text_to_image", "n_images"):
        if key not in result:
            raise BadInputError(f"not a retrieval_metrics result: no {key!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = {"schema": RETRIEVAL_SCHEMA, **_stamp(), "model": model_ref, "data": data_ref,
            "extra": dict(extra or {}), **result}  # fmt: skip
    path = out / RETRIEVAL_FILE
    path.write_text(json.dumps(json_safe(data), indent=2, default=str) + "\n")
    return path


def _prompt_rows(names: list[str], prompts, readout: str) -> list[dict[str, str]]:
    if prompts is None:
        if readout == "prompts":
            raise BadInputError("zero-shot results with readout 'prompts' must record their prompts")
        return []
    if isinstance(prompts, Mapping):
        absent = [n for n in names if n not in prompts]
        if absent:
            raise BadInputError(f"no prompts for finding(s) {absent}")
        pairs = [prompts[n] for n in names]
    else:
        pairs = list(prompts)
        if len(pairs) != len(names):
            raise BadInputError(f"{len(pairs)} prompt pairs for {len(names)} findings")
    return [{"finding": n, "positive": str(p), "negative": str(q)} for n, (p, q) in zip(names, pairs)]


def _stamp() -> dict[str, str]:
    return {"greenfm_version": greenfm.__version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}  # fmt: skip
