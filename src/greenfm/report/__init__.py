"""What users read: the HTML evaluation report, the green card and the model card.

``build_report(run_dirs, out)`` writes one self-contained HTML page; see
``greenfm.report.runs`` for the artefacts it reads and
``greenfm.report.label_efficiency`` for the label-efficiency results schema.
Names are imported on first use, so ``import greenfm.report`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "build_report": "html",
    "read_run": "runs",
    "RunArtifacts": "runs",
    "green_card": "green_card",
    "model_card": "card",
    "read_label_efficiency": "label_efficiency",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"greenfm.report.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'greenfm.report' has no attribute {name!r}")
