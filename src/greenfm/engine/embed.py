"""Batched inference: one embedding per image, and the embeddings Parquet file.

On CUDA, inference runs under bf16 autocast (fp16 where bf16 is unsupported) with
channels-last 2D inputs; on the CPU it runs in fp32, where reduced precision
only costs speed and accuracy. Either way the vectors come back as float32.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from greenfm.data.dataset import check_batch_against_contract
from greenfm.data.embeddings import Embeddings, write_embeddings
from greenfm.errors import ConfigError
from greenfm.models.backbones import Encoder

log = logging.getLogger(__name__)

_PRECISIONS = {
    "32": None, "fp32": None, "bf16": torch.bfloat16, "bf16-mixed": torch.bfloat16,
    "16": torch.float16, "fp16": torch.float16, "16-mixed": torch.float16,
}  # fmt: skip


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for, but no CUDA GPU is available")
    return device


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for fp32. ``auto``: bf16 (else fp16) on CUDA, fp32 elsewhere."""
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision not in _PRECISIONS:
        raise ConfigError(f"unknown precision '{precision}'; valid: auto, {', '.join(_PRECISIONS)}")
    return _PRECISIONS[precision]


def _images(batch: Any) -> torch.Tensor:
    if isinstance(batch, dict):
        return batch["image"]
    if isinstance(batch, (list, tuple)):
        return batch[0]
    return batch


def as_encoder(module: nn.Module) -> Encoder:
    """Wrap a bare timm model (e.g. a method's ``export_model()``) as an Encoder; Encoders pass through."""
    if isinstance(module, Encoder):
        return module
    if not callable(getattr(module, "forward_features", None)):
        raise ConfigError(f"{type(module).__name__} has no forward_features; pass a greenfm Encoder")
    name = (getattr(module, "pretrained_cfg", None) or {}).get("architecture", type(module).__name__)
    return Encoder(module, {"library": "timm", "name": name, "kwargs": {}})


def embed_dataset(
    encoder: Encoder | nn.Module,
    dataset: Dataset,
    *,
    pool: str | None = None,
    batch_size: int = 64,
    device: str | torch.device = "auto",
    precision: str = "auto",
    num_workers: int = 0,
) -> np.ndarray:
    """Embeddings (N, D) float32 of ``dataset`` items, in dataset order.

    Items are ``{"image": tensor, ...}`` (as ``ImageDataset`` yields), tuples whose
    first element is the image, or bare tensors. The encoder is used in eval mode
    under ``torch.inference_mode``; its device, memory format and mode are restored.
    A bare timm model (a method's ``export_model()``) is wrapped with :func:`as_encoder`.
    """
    encoder = as_encoder(encoder)
    pool = encoder.resolve_pool(pool)
    device = resolve_device(device)
    dtype = resolve_precision(precision, device)
    channels_last = device.type == "cuda" and encoder.family != "map3d"

    first = next(encoder.parameters())
    home, was_training = first.device, encoder.training
    encoder.eval().to(device)
    if channels_last:
        encoder.to(memory_format=torch.channels_last)
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=device.type == "cuda"
    )
    out = np.empty((len(dataset), encoder.embed_dim), dtype=np.float32)  # type: ignore[arg-type]
    autocast = (
        torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    )
    filled = 0
    try:
        with torch.inference_mode(), autocast:
            for batch in loader:
                if filled == 0:
                    check_batch_against_contract(dataset, _images(batch))
                x = _images(batch).to(device, non_blocking=True)
                if channels_last and x.ndim == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                vectors = encoder.embed(x, pool).float().cpu().numpy()
                out[filled : filled + len(vectors)] = vectors
                filled += len(vectors)
    finally:
        if channels_last:
            encoder.to(memory_format=torch.contiguous_format)
        encoder.to(home).train(was_training)
    return out


def embed_to_file(
    encoder: Encoder,
    dataset: Dataset,
    path: str | Path,
    *,
    pool: str | None = None,
    batch_size: int = 64,
    device: str | torch.device = "auto",
    precision: str = "auto",
    num_workers: int = 0,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Embed ``dataset`` (which exposes ``ids``, ``patient_ids``, ``paths``, like ``ImageDataset``)
    and write the embeddings Parquet file; its metadata records model, weights, pool and contract."""
    missing = [name for name in ("ids", "patient_ids", "paths") if not hasattr(dataset, name)]
    if missing:
        raise ConfigError(f"the dataset must expose {missing} to write an embeddings file (an ImageDataset does)")
    vectors = embed_dataset(
        encoder, dataset, pool=pool, batch_size=batch_size, device=device, precision=precision, num_workers=num_workers
    )
    contract = getattr(dataset, "contract", None)
    info = {
        "model": encoder.spec,
        "weights": encoder.weights_source,
        "pool": encoder.resolve_pool(pool),
        "contract": contract.to_dict() if hasattr(contract, "to_dict") else encoder.preprocessing,
        **(metadata or {}),
    }
    table = Embeddings(
        ids=dataset.ids, patient_ids=dataset.patient_ids, paths=dataset.paths, vectors=vectors, metadata=info
    )
    return write_embeddings(path, table)
