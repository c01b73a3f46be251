"""The one training loop (Lightning Fabric), its checkpoints and its compute ledger.

``fit(method, dataset, TrainConfig(...), run_dir)`` trains any method (an ``nn.Module``
with ``training_step(batch) -> {"loss": ...}``); see ``trainer`` for the contract,
``run_dir`` for the folder it writes and ``launch`` for multi-device and multi-node runs.

Names are imported on first use, so ``import greenfm.engine.<module>`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FitResult": "trainer",
    "fit": "trainer",
    "TrainConfig": "train_config",
    "WeightsReport": "checkpoint",
    "load_checkpoint": "checkpoint",
    "load_weights": "checkpoint",
    "read_weights": "checkpoint",
    "FLOP_CONVENTION": "flops",
    "count_forward_flops": "flops",
    "print_ledger": "ledger",
    "write_compute_json": "ledger",
    "RunDir": "run_dir",
    "read_metrics": "run_dir",
    "write_run_config": "run_dir",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"greenfm.engine.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'greenfm.engine' has no attribute {name!r}")
