"""Shared plumbing for verbs: resolve a model reference, build (cached) datasets."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from greenfm.data.cache import build_cache
from greenfm.data.contract import VOLUME_PRESETS, Contract, get_contract
from greenfm.data.dataset import ImageDataset
from greenfm.data.manifest import Manifest, assert_no_patient_leakage, load_manifest
from greenfm.data.mri_studies import StudyManifest, is_study_manifest, load_study_manifest, mri_study_dataset
from greenfm.data.volume_dataset import VolumeDataset
from greenfm.errors import BadInputError, ConfigError
from greenfm.models.backbones import Encoder, create_encoder
from greenfm.models.export import CONFIG_FILE, is_model_folder, load_exported_encoder
from greenfm.models.weights import WEIGHT_SUFFIXES

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
        if (path / "exported" / "best.safetensors").is_file():
            raise BadInputError("is a fine-tuning run, whose exported/ holds weights only; run `greenfm export "
                                f"{path} --out MODEL` and pass the model folder (2-D models)", source=str(path))
        raise BadInputError("neither a greenfm run folder (with exported/) nor an export folder", source=str(path))
    looks_local = path.suffix in WEIGHT_SUFFIXES or (path.parent != Path(".") and path.parent.is_dir())
    if str(model) != "random" and not path.exists() and looks_local:
        raise BadInputError("not found (expected a run folder, a model folder or a weights file)", source=str(model))
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
    if path.is_dir() and not (path / "exported").is_dir() and (path / "align" / "exported").is_dir():
        log.info("%s holds a staged run (--stage all): using its align stage, %s", path, path / "align")
        path = path / "align"
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
    say), so that no run calls a chest X-ray model a fundus one. A 3-D encoder (``r3d_18``,
    ``r3d_18_lite``) gets a volume preset instead: ``mri`` for MRI data, else ``ct-chest``
    (METHODS 3.7). A 2-D contract for a 3-D encoder, or the reverse, is refused in one line.
    The choice is logged.
    """
    data_says = modality or data_modality(data)
    volume_model = encoder.family == "map3d"
    if requested is not None:
        size = encoder.img_size[-1] if encoder.img_size else None
        image_preset = isinstance(requested, str) and requested in _presets() and requested not in VOLUME_PRESETS
        contract = get_contract(requested, size=size if image_preset else None)
        why = f"{requested} (as asked)"
    elif encoder.preprocessing:
        contract = Contract.from_dict(encoder.preprocessing)
        why = "the model's own"
    elif volume_model:
        preset = VOLUME_MODALITY_PRESETS.get(data_says or "", "ct-chest")
        contract = get_contract(preset)
        source = f"modality {data_says}" if data_says else "the data name no modality; --contract to choose"
        why = f"{preset} for a 3-D encoder ({source})"
    else:
        size = encoder.img_size[-1] if encoder.img_size else 224
        preset = MODALITY_PRESETS.get(data_says or "", "rfg")
        contract = get_contract(preset, size=size).replace(modality=data_says or "other")
        source = f"modality {data_says}" if modality else (f"the manifest's meta_modality ({data_says})" if data_says
                                                          else "the data name no modality; --modality or --contract to choose")
        why = f"{preset} at {size} px ({source})"
    if modality is not None and contract.modality != modality:
        contract = contract.replace(modality=modality)
    _check_dimensions(encoder, contract, requested)
    log.info("preprocessing contract: %s; modality %s", why, contract.modality)
    return contract


def _check_dimensions(encoder: Encoder, contract: Contract, requested: Any) -> None:
    """A 3-D encoder needs a volume contract and a 2-D one an image contract, with matching channels."""
    name = encoder.spec.get("greenfm_name") or encoder.spec.get("name", "encoder")
    what = f"contract {requested}" if requested is not None else "the contract"
    if encoder.family == "map3d" and not contract.is_volume:
        raise ConfigError(f"the 3-D encoder {name} takes volumes, but {what} is for 2-D images (size "
                          f"{tuple(contract.size)}); choose {', '.join(VOLUME_PRESETS)} or a volume contract file")
    if encoder.family != "map3d" and contract.is_volume:
        raise ConfigError(f"{what} is for 3-D volumes (size {tuple(contract.size)}), but the encoder {name} takes "
                          "2-D images; use a 3-D encoder (--backbone r3d_18 or r3d_18_lite)")
    if encoder.family == "map3d" and not encoder.spec.get("planes"):  # three-plane MRI: channels are sequences
        stem = encoder.spec.get("replace", {}).get("stem.0", {}).get("args", {})
        if stem.get("in_channels", contract.channels) != contract.channels:
            raise ConfigError(f"the 3-D encoder {name} takes {stem['in_channels']} input channel(s), but {what} "
                              f"gives {contract.channels}")


MODALITY_PRESETS = {"xray": "cxr-medpeft", "photo": "imagenet", "fundus": "rfg"}
VOLUME_MODALITY_PRESETS = {"ct": "ct-chest", "mri": "mri"}
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
    if isinstance(data, Manifest):
        manifest = data
    elif is_study_manifest(data):  # one multi-sequence MRI study per row (path_<plane>_<sequence> columns)
        manifest = load_study_manifest(data, skip_bad=skip_bad)
    else:
        manifest = load_manifest(data, skip_bad=skip_bad)
    assert_no_patient_leakage(manifest.table, source=str(manifest.source))
    if manifest.problems:
        log.warning("%s: skipped %d bad row(s); first: %s", manifest.source, len(manifest.problems), manifest.problems[0])
    return manifest


_NOT_GIVEN: Any = object()


def image_dataset(
    manifest: Manifest,
    contract: Contract,
    *,
    cache_root: str | Path | None = None,
    augment: Any = _NOT_GIVEN,
    skip_bad: bool = False,
    labels: bool = True,
    train: bool | None = None,
) -> ImageDataset:
    """An ``ImageDataset``, read from the decode-once cache when ``cache_root`` is given (built if missing).

    A volume contract gives a ``VolumeDataset`` (same items, ``image`` (C, D, H, W)): a
    random crop when ``train``, else the centre crop. ``train`` left out means: a
    training set when ``augment`` is passed (even as None, as ``greenfm pretrain`` does),
    an evaluation set otherwise (embedding, zero-shot, retrieval).
    """
    if train is None:
        train = augment is not _NOT_GIVEN
    if augment is _NOT_GIVEN:
        augment = None
    if isinstance(manifest, StudyManifest):  # three planes x three sequences per row, per the contract's sizes
        if not contract.is_volume:
            raise ConfigError(f"{manifest.source} holds MRI studies; they need a volume contract (mri), not "
                              f"{tuple(contract.size)} images")  # fmt: skip
        if augment is not None:
            raise ConfigError("MRI studies train without augmentation (METHODS 3.6): use --augment none")
        return mri_study_dataset(manifest, train=train, labels=labels, crop=tuple(contract.size),
                                 pad=tuple(contract.pad_size or contract.size))  # fmt: skip
    if contract.is_volume and augment is not None and _is_2d_augment(augment):
        raise ConfigError("a 2-D image augmentation cannot apply to volumes; METHODS 3.7 trains volumes without "
                          "augmentation (--augment none)")
    store = None
    if cache_root is not None:
        store = build_cache(manifest, contract, cache_root, skip_bad=skip_bad, progress=False)
    if contract.is_volume:
        return VolumeDataset(manifest, contract, train=train, cache=store, augment=augment, labels=labels)
    return ImageDataset(manifest, contract, cache=store, augment=augment, labels=labels)


def _is_2d_augment(augment: Any) -> bool:
    from torchvision.transforms import v2

    return isinstance(augment, (v2.Transform, v2.Compose))


def _presets() -> tuple[str, ...]:
    from greenfm.data.contract import PRESETS

    return tuple(PRESETS)
