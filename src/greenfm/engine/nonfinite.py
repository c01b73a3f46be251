"""A NaN or Inf loss (or gradient) is caught at the step, before the optimiser touches the weights.

``TrainConfig.on_nonfinite`` says what happens then:

- ``stop`` (default): raise :class:`NonFiniteLossError`, one line naming the step and the
  samples of the batch; nothing is written, so ``checkpoints/last.ckpt`` stays the last
  good state.
- ``skip``: drop the step's gradients, keep the weights, and count the batch: a warning
  in ``train.log``, a ``{"type": "nonfinite"}`` row in ``metrics.jsonl``, and the totals
  (``nonfinite_skipped`` batches, their sample ids) in the checkpoint's progress and in
  ``compute.json``.

Gradients are checked too, except under ``16-mixed`` precision, where the grad scaler
already skips the steps whose scaled gradients overflow. In DDP every rank takes the
same decision.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from greenfm.errors import GreenfmError

log = logging.getLogger(__name__)

MAX_IDS_KEPT = 200  # sample ids remembered in the checkpoint (the log has them all)


class NonFiniteLossError(GreenfmError):
    """Training met a NaN or Inf loss or gradient with ``on_nonfinite="stop"``."""


def step_is_finite(values: Mapping[str, Any], method: nn.Module, *, check_grads: bool) -> bool:
    """True when the step's loss (and, with ``check_grads``, every gradient) is finite, on this rank."""
    loss = values.get("loss")
    if loss is not None and not bool(torch.isfinite(torch.as_tensor(loss)).all()):
        return False
    if check_grads:
        grads = [p.grad for p in method.parameters() if p.grad is not None]
        if grads and not bool(torch.stack(torch._foreach_norm(grads)).isfinite().all()):
            return False
    return True


def sample_ids(dataset: Any, batches: list[Any], *, limit: int | None = None) -> list[str]:
    """The batches' ``index`` values as manifest ids when the dataset has a manifest, else as numbers."""
    indices: list[int] = []
    for batch in batches:
        index = batch.get("index") if isinstance(batch, Mapping) else None
        if isinstance(index, torch.Tensor):
            indices.extend(int(i) for i in index.reshape(-1).tolist())
        elif isinstance(index, (list, tuple)):
            indices.extend(int(i) for i in index)
    table = _manifest_table(dataset)
    ids = []
    for i in indices[:limit]:
        if table is not None and "id" in table.columns and 0 <= i < len(table):
            ids.append(str(table["id"].iat[i]))
        else:
            ids.append(f"#{i}")
    return ids


def describe(ids: list[str], n: int = 8) -> str:
    if not ids:
        return "samples unknown (the batch has no 'index')"
    return "samples " + ", ".join(ids[:n]) + (f" and {len(ids) - n} more" if len(ids) > n else "")


def record_skip(progress: dict[str, Any], ids: list[str]) -> None:
    """Count a skipped batch in the run's progress (saved in every checkpoint)."""
    progress["nonfinite_skipped"] = int(progress.get("nonfinite_skipped", 0)) + 1
    kept = list(progress.get("nonfinite_ids", []))
    progress["nonfinite_ids"] = (kept + ids)[:MAX_IDS_KEPT]


def stop_message(step: int, epoch: int, ids: list[str], last: Any, last_step: int | None, loss: float) -> str:
    kept = (
        f"the last good checkpoint is {last} (step {last_step})" if last_step is not None else "no checkpoint was written"
    )
    what = f"loss {loss}" if not math.isfinite(loss) else "a gradient"
    return (
        f"non-finite {what} at step {step} (epoch {epoch}; {describe(ids)}); the weights were not updated and "
        f"{kept}; lower lr, set grad_clip, check those samples, or set train.on_nonfinite=skip"
    )


def _manifest_table(dataset: Any) -> Any:
    """The manifest table behind a dataset (also through ``WithReports`` / ``Subset``-style wrappers)."""
    for _ in range(4):
        manifest = getattr(dataset, "manifest", None)
        if manifest is not None and hasattr(manifest, "table"):
            return manifest.table
        dataset = getattr(dataset, "dataset", None) or getattr(dataset, "base", None)
        if dataset is None:
            return None
    return None
