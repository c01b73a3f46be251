"""``greenfm pretrain``: continual pretraining of an image encoder with a named recipe.

The run folder follows the engine's contract (config.yaml, metrics.jsonl,
train.log, checkpoints/, compute.json, exported/). At the end the student is
exported as ``exported/model.safetensors`` + ``exported/config.json``, which load
into a plain ``timm.create_model`` (see ``greenfm.models.export``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from pydantic import Field

from greenfm.config import GreenfmConfig, build_config
from greenfm.data.augment import get_augment
from greenfm.engine import TrainConfig, fit, write_run_config
from greenfm.engine.run_dir import RunDir, read_run_config
from greenfm.errors import ConfigError
from greenfm.methods.registry import get_method
from greenfm.models.backbones import create_encoder
from greenfm.models.export import export_encoder
from greenfm.workflows.inputs import encoder_contract, image_dataset, load_checked_manifest, load_encoder

log = logging.getLogger(__name__)

DEFAULT_IMG_SIZE = 392  # METHODS §2: ViT-S/14 at 392 px


class PretrainConfig(GreenfmConfig):
    """Everything a pretraining run needs besides the optimiser (``train``)."""

    recipe: str = Field("token-reconstruction", description="Pretraining recipe (see `greenfm.methods.registry`).")
    data: str = Field(..., description="Manifest of the (unlabelled) training images.")
    backbone: str = Field("vit_small_patch14_reg4_dinov2", description="Encoder architecture (timm name or greenfm tiny config).")
    init: str = Field(
        "random",
        description="Initial weights: random, a weights file, a greenfm run or export folder, or a hub name.",
    )
    img_size: int | None = Field(
        None,
        description="Input side in pixels (ViT position embeddings are resampled). Default: an --init model folder's "
        "own size, else 392 (METHODS).",
    )
    contract: str | None = Field(
        None,
        description="Preprocessing contract preset or JSON file; its size follows img_size. Default: an --init model "
        "folder's own contract, else rfg.",
    )
    modality: str | None = Field(None, description="Override the contract's modality (xray, fundus, ct, ...).")
    augment: str = Field("auto", description="Training augmentation: auto (by modality), rfg, cxr, medpeft or none.")
    splits: list[str] = Field(["train"], description="Splits used for pretraining when the manifest has a split column.")
    cache: str | None = Field(None, description="Decode-once cache root (default: $GREENFM_CACHE_DIR or ~/.cache/greenfm).")
    skip_bad: bool = Field(False, description="Skip unusable rows or images and count them.")
    method: dict[str, Any] = Field(default_factory=dict, description="Recipe options (e.g. noise_std, mask_max).")
    train: dict[str, Any] = Field(default_factory=dict, description="TrainConfig overrides on top of the recipe's defaults.")


def default_cache_root() -> Path:
    return Path(os.environ.get("GREENFM_CACHE_DIR", Path.home() / ".cache" / "greenfm"))


def run_pretrain(config: PretrainConfig, out: str | Path, *, resume: bool = False):
    """Train, then export the encoder; returns the engine's ``FitResult``."""
    out = Path(out)
    method_cls = get_method(config.recipe)
    train_config = build_config(TrainConfig, **{**method_cls.default_train_config(), **config.train})
    build_config(method_cls.Config, **config.method)  # validate before any work starts

    manifest = load_checked_manifest(config.data, skip_bad=config.skip_bad)
    if manifest.has_splits:
        manifest = manifest.subset(manifest.table["split"].isin(config.splits))
        if len(manifest) == 0:
            raise ConfigError(f"{config.data}: no rows in split(s) {config.splits} to pretrain on")

    if Path(config.init).expanduser().is_dir():
        encoder = load_encoder(config.init)
        if config.img_size and encoder.img_size and encoder.img_size[-1] != config.img_size:
            raise ConfigError(
                f"--init {config.init} was trained at {encoder.img_size[-1]} px but img_size is {config.img_size}"
            )
    else:
        encoder = create_encoder(config.backbone, weights=config.init, img_size=config.img_size or DEFAULT_IMG_SIZE)
    contract = encoder_contract(encoder, config.contract, modality=config.modality)
    augment_name = config.augment if config.augment != "auto" else _auto_augment(contract.modality)
    dataset = image_dataset(
        manifest,
        contract,
        cache_root=config.cache or default_cache_root(),
        augment=get_augment(augment_name, contract),
        skip_bad=config.skip_bad,
        labels=False,
    )
    method = method_cls(encoder, config.method)
    record = {
        "recipe": config.recipe,
        "backbone": config.backbone,
        "init_weights": encoder.weights_source,
        "contract": contract.to_dict(),
        "augment": augment_name,
        "images": len(dataset),
        "patients": int(manifest.table["patient_id"].nunique()),
        "manifest_hash": manifest.hash,
        "flags": getattr(method, "flags", {}),
    }
    if not resume:
        write_run_config(
            out,
            {"pretrain": config.to_dict(), "train": train_config.to_dict(), "record": record},
            manifest_hash=manifest.hash,
            seed=train_config.seed,
        )
    flops = training_flops_per_sample(method, dataset)
    record["training_flops_convention"] = flops[1]
    result = fit(method, dataset, train_config, out, resume=resume, run_record=record, flops_per_sample=flops[0],
                 export=False)
    export_encoder(method.encoder, RunDir(out).exported, preprocessing=contract, metadata=record)
    return result


def training_flops_per_sample(method, dataset) -> tuple[float | None, str]:
    """Training FLOPs per image as METHODS §8 counts them for a frozen-teacher recipe.

    teacher forward + 3 x (student forward + projector); the backward pass costs
    twice the forward and the frozen teacher has none. Falls back to the engine's
    3 x forward estimate (``None``) for methods without a teacher.
    """
    import torch

    from greenfm.engine.flops import count_forward_flops

    teacher = getattr(method, "teacher", None)
    if teacher is None:
        return None, "3 x forward (engine default)"
    x = dataset[0]["image"].unsqueeze(0)
    forward = count_forward_flops(teacher, x)
    projector = 0
    if getattr(method, "projector", None) is not None:
        with torch.no_grad():
            tokens = teacher.forward_features(x)
        projector = count_forward_flops(method.projector, tokens)
    return float(forward + 3 * (forward + projector)), "teacher forward + 3 x (student forward + projector)"


def load_run_pretrain_config(run_dir: str | Path) -> PretrainConfig:
    """The ``PretrainConfig`` a run folder was started with (for ``--resume``)."""
    saved = read_run_config(run_dir, "pretrain", "pretraining")
    return PretrainConfig(**{**saved["pretrain"], "train": {**saved["pretrain"].get("train", {}), **saved.get("train", {})}})


def _auto_augment(modality: str) -> str:
    return {"fundus": "rfg", "photo": "rfg"}.get(modality, "cxr" if modality == "xray" else "none")
