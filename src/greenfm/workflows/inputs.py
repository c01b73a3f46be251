"""Shared plumbing for verbs: resolve a model reference, build (cached) datasets."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from greenfm.data.cache import build_cache
from greenfm.data.contract import Contract, get_contract
from greenfm.data.dataset import ImageDataset
from greenfm.data.manifest import Manifest, assert_no_patient_leakage, load_manifest
from greenfm.errors import BadInputError
from greenfm.models.backbones import Encoder, create_encoder
from greenfm.models.export import CONFIG_FILE, load_exported_encoder

log = logging.getLogger(__name__)


def load_encoder(model: str | Path, *, backbone: str | None = None, img_size: int | None = None) -> Encoder:
    """An encoder from a run folder, an export folder, a weights file (with ``backbone``) or a hub name.

    - a run folder: its ``exported/`` model;
    - an export folder (``config.json`` + ``model.safetensors``): loaded as saved;
    - ``random``, a weights file or a hub name: ``backbone`` names the architecture.
    """
    path = Path(str(model)).expanduser()
    if path.is_dir():
        for folder in (path / "exported", path):
            if (folder / CONFIG_FILE).is_file():
                return load_exported_encoder(folder)
        raise BadInputError("neither a greenfm run folder (with exported/) nor an export folder", source=str(path))
    if backbone is None:
        raise BadInputError(
            "a weights file or hub name needs --backbone to name the architecture", source=str(model)
        )
    return create_encoder(backbone, weights=str(model), img_size=img_size)


def encoder_contract(encoder: Encoder, requested: str | Path | Contract | None, *, modality: str | None = None) -> Contract:
    """The preprocessing contract: the one asked for, else the encoder's own, else RETFound-Green's at its size."""
    if requested is not None:
        size = encoder.img_size[-1] if encoder.img_size else None
        contract = get_contract(requested, size=size if isinstance(requested, str) and requested in _presets() else None)
    elif encoder.preprocessing:
        contract = Contract.from_dict(encoder.preprocessing)
    else:
        size = encoder.img_size[-1] if encoder.img_size else 224
        contract = get_contract("rfg", size=size)
    if modality is not None and contract.modality != modality:
        contract = contract.replace(modality=modality)
    return contract


def load_checked_manifest(data: str | Path | Manifest, *, skip_bad: bool = False) -> Manifest:
    """Load a manifest and refuse patient leakage across splits."""
    manifest = data if isinstance(data, Manifest) else load_manifest(data, skip_bad=skip_bad)
    assert_no_patient_leakage(manifest.table, source=str(manifest.source))
    if manifest.problems:
        log.warning("%s: skipped %d bad row(s); first: %s", manifest.source, len(manifest.problems), manifest.problems[0])
    return manifest


def image_dataset(
    manifest: Manifest,
    contract: Contract,
    *,
    cache_root: str | Path | None = None,
    augment: Any = None,
    skip_bad: bool = False,
    labels: bool = True,
) -> ImageDataset:
    """An ``ImageDataset``, read from the decode-once cache when ``cache_root`` is given (built if missing)."""
    store = None
    if cache_root is not None:
        store = build_cache(manifest, contract, cache_root, skip_bad=skip_bad, progress=False)
    return ImageDataset(manifest, contract, cache=store, augment=augment, labels=labels)


def _presets() -> tuple[str, ...]:
    from greenfm.data.contract import PRESETS

    return tuple(PRESETS)
