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
from greenfm.models.export import CONFIG_FILE, is_model_folder, load_exported_encoder

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
                if is_model_folder(folder):  # checked first: hashes, contract, reference embeddings
                    from greenfm.export.loader import load_exported

                    return load_exported(folder).encoder
                return load_exported_encoder(folder)
        raise BadInputError("neither a greenfm run folder (with exported/) nor an export folder", source=str(path))
    if backbone is None:
        raise BadInputError(
            "a weights file or hub name needs --backbone to name the architecture", source=str(model)
        )
    return create_encoder(backbone, weights=str(model), img_size=img_size)


def load_image_text(model: str | Path):
    """An ``ImageTextModel`` from a run folder, its ``exported/`` or a ``greenfm export`` model folder.

    A model folder goes through ``greenfm.export.load_exported`` (every file's sha256, the
    contract and the reference embeddings and latents); the others load as saved.
    """
    from greenfm.models.image_text import ImageTextModel

    path = Path(str(model)).expanduser()
    if is_model_folder(path):
        from greenfm.export.loader import load_exported

        exported = load_exported(path)
        if exported.text is None:
            raise BadInputError(
                "not an image-text model (no text tower); train one with --recipe unicl or clip", source=str(path)
            )
        return exported.image_text
    return ImageTextModel.from_export(path)


def encoder_contract(
    encoder: Encoder,
    requested: str | Path | Contract | None,
    *,
    modality: str | None = None,
    data: Manifest | None = None,
) -> Contract:
    """The preprocessing contract: the one asked for, else the encoder's own, else one for the data's modality.

    Without a contract from the user or the model, the data decide (``modality``, else the
    manifest's ``meta_modality`` column, which the DICOM and MedMNIST importers write):
    ``cxr-medpeft`` for X-rays, ``imagenet`` for photographs, ``rfg`` (RETFound-Green's) for
    fundus and any other modality, relabelled with that modality ("other" when the data do not
    say), so that no run calls a chest X-ray model a fundus one. The choice is logged.
    """
    data_says = modality or data_modality(data)
    if requested is not None:
        size = encoder.img_size[-1] if encoder.img_size else None
        contract = get_contract(requested, size=size if isinstance(requested, str) and requested in _presets() else None)
        why = f"{requested} (as asked)"
    elif encoder.preprocessing:
        contract = Contract.from_dict(encoder.preprocessing)
        why = "the model's own"
    else:
        size = encoder.img_size[-1] if encoder.img_size else 224
        preset = MODALITY_PRESETS.get(data_says or "", "rfg")
        contract = get_contract(preset, size=size).replace(modality=data_says or "other")
        source = f"modality {data_says}" if modality else (f"the manifest's meta_modality ({data_says})" if data_says
                                                          else "the data name no modality; --modality or --contract to choose")
        why = f"{preset} at {size} px ({source})"
    if modality is not None and contract.modality != modality:
        contract = contract.replace(modality=modality)
    log.info("preprocessing contract: %s; modality %s", why, contract.modality)
    return contract


MODALITY_PRESETS = {"xray": "cxr-medpeft", "photo": "imagenet", "fundus": "rfg"}
DICOM_MODALITIES = {"CR": "xray", "DX": "xray", "DR": "xray", "RG": "xray", "MG": "xray", "CT": "ct", "MR": "mri",
                    "US": "us", "OP": "fundus", "XC": "photo"}  # fmt: skip
CONTRACT_MODALITIES = ("xray", "fundus", "ct", "mri", "us", "photo", "other")


def data_modality(data: Manifest | None) -> str | None:
    """The modality most rows of the manifest name in ``meta_modality`` (DICOM codes mapped), else None."""
    if data is None or "meta_modality" not in data.table.columns:
        return None
    values = data.table["meta_modality"].dropna().astype(str).str.strip()
    values = values[values != ""]
    if values.empty:
        return None
    top = values.mode().iloc[0]
    mapped = DICOM_MODALITIES.get(top.upper(), top.lower())
    return mapped if mapped in CONTRACT_MODALITIES else "other"


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
