"""``export_model``: write a run's model as a self-describing, checkable folder (see ``greenfm.export``)."""

from __future__ import annotations

import json
import logging
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import greenfm
from greenfm.data.contract import Contract, normalized_range
from greenfm.errors import BadInputError, GreenfmError
from greenfm.export.card import with_tower_sections
from greenfm.export.loader import (
    CARD,
    CONFIG,
    CONTRACT,
    EXPORT_FORMAT,
    HEADS,
    METADATA,
    POOL_RECIPES,
    PRE_LOGITS,
    REFERENCE_ATOL,
    REFERENCE_JSON,
    REFERENCE_LATENTS_NPY,
    REFERENCE_NPY,
    REFERENCE_RTOL,
    REFERENCE_TEXT,
    REFERENCE_TEXT_NPY,
    WEIGHTS,
    ExportedModel,
    open_export,
    package_version,
    read_json,
    sha256_file,
    write_json,
)
from greenfm.export.sources import RunWeights, check_fits, copy_run_towers, resolve_contract, run_weights
from greenfm.io_safety import plain_file_mode
from greenfm.models.backbones import Encoder, build_model

log = logging.getLogger(__name__)


def export_model(
    run_dir: Path,
    out: Path,
    *,
    fixture_image: str | Path | np.ndarray | None = None,
    contract: str | Path | Contract | None = None,
    pool: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Export the model of ``run_dir`` to the folder ``out`` (layout: ``greenfm.export``); returns ``out``.

    Args:
        fixture_image: the image whose embeddings are stored for checking (a file, or a uint8 /
            uint16 array); default: a deterministic synthetic image.
        contract: the preprocessing contract (preset or JSON file), only needed when the run
            records none; one that differs from the run's is refused.
        pool: embedding pooling of an encoder export (default: the run's, else the encoder's).
        overwrite: replace the files of an existing export in ``out``.
    """
    from greenfm.report.runs import read_run

    run_dir, out = Path(run_dir), Path(out)
    run = read_run(run_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise BadInputError("export folder is not empty; choose a new folder or pass overwrite", source=str(out))
        if not (out / CONFIG).is_file() or read_json(out / CONFIG).get("format") != EXPORT_FORMAT:
            raise BadInputError("is not a greenfm model export; refusing to overwrite it", source=str(out))
    found = resolve_contract(run, contract)
    if found.is_volume:
        raise BadInputError(
            "is a 3-D (volume) model; greenfm export writes 2-D image models only (its reference check and "
            "model card use an image). Use the run folder itself: embed, probe, zeroshot and retrieve load it",
            source=str(run_dir))
    weights = run_weights(run, pool)
    with torch.random.fork_rng(devices=[]):
        model = build_model(weights.spec)
    try:
        model.load_state_dict(weights.state, strict=True)
    except RuntimeError as exc:
        raise GreenfmError(
            f"{run_dir}: the run's weights ({weights.source}) are not a plain "
            f"{weights.spec.get('name')} ({str(exc).splitlines()[0]})"
        ) from None
    check_fits(model, found, run_dir)
    encoder = Encoder(model, weights.spec)
    if weights.pooling != PRE_LOGITS:
        weights.pooling = encoder.resolve_pool(weights.pooling)

    # Written into a staging folder and renamed, so a failed export leaves no half-written model.
    staging = out.with_name(f".{out.name}.export-tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        _write_export(staging, run, model, encoder, weights, found, fixture_image)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out.is_dir():
        shutil.rmtree(out)
    elif out.exists():
        out.unlink()
    staging.rename(out)
    log.info("exported %s to %s", run_dir, out)
    return out


def _write_export(
    out: Path, run, model: nn.Module, encoder: Encoder, weights: RunWeights, found: Contract, fixture_image
) -> None:
    from safetensors.torch import save_file

    from greenfm.report.card import model_card
    from greenfm.report.runs import describe_data

    state = {
        k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).contiguous()
        for k, v in model.state_dict().items()
    }
    save_file(state, str(out / WEIGHTS), metadata={"format": "pt", "greenfm": json.dumps({"format": EXPORT_FORMAT})})
    plain_file_mode(out / WEIGHTS)  # safetensors writes 0600; the folder's other files are 0644
    towers, heads = copy_run_towers(run, out)  # text/ and heads.safetensors, byte for byte
    fixture = write_fixture(out, fixture_image, found)
    export_config = run.export_config or {}
    config = {
        "format": EXPORT_FORMAT,
        "greenfm_version": greenfm.__version__,
        "model": weights.spec,
        "embed_dim": encoder.embed_dim,
        "num_prefix_tokens": encoder.num_prefix_tokens,
        "pooling": weights.pooling,
        "pooling_recipe": POOL_RECIPES.get(weights.pooling, weights.pooling),
        "default_pool": weights.pooling,
        "task": weights.task,
        "n_parameters": sum(v.numel() for v in state.values()),
        "contract": found.to_dict(),
        "preprocessing": found.to_dict(),
        "contract_fingerprint": found.fingerprint,
        "fixture": {"file": fixture.name, "generated": fixture_image is None},
        # as in a run's exported/config.json: the towers and heads beside model.safetensors, the run record
        "towers": towers,
        "heads": heads,
        "init_weights": export_config.get("init_weights"),
        "metadata": export_config.get("metadata") or {},
        "source_run": {
            "path": str(run.root.resolve()),
            "method": run.method,
            "weights": weights.source,
            "lora_merged": weights.lora_merged,
        },
    }
    if "text" in towers:
        config["fixture"]["text"] = REFERENCE_TEXT
    exported = open_export(out, config, found, {})
    if exported.text is not None:
        towers["text"]["embed_dim"] = exported.text.embed_dim
        towers["text"]["n_parameters"] = sum(p.numel() for p in exported.text.model.parameters())
    write_json(out / CONFIG, config)
    write_json(out / CONTRACT, found.to_dict())
    references = write_reference(out, exported)
    checked = [WEIGHTS, CONFIG, CONTRACT, fixture.name, *references, REFERENCE_JSON]
    checked += sorted(f.relative_to(out).as_posix() for n, e in towers.items() if n != "image"
                      for f in (out / e["path"]).rglob("*") if f.is_file())  # fmt: skip
    checked += [HEADS] if heads else []
    metadata = bundle_metadata(run, config, found, {name: sha256_file(out / name) for name in checked})
    run.n_parameters = config["n_parameters"]
    card = model_card(run.name, config, metadata, run, describe_data(run))
    (out / CARD).write_text(with_tower_sections(card, exported), encoding="utf-8")
    write_json(out / METADATA, metadata)


# -- fixture and reference embeddings ------------------------------------------------------------


def fixture_array(contract: Contract) -> np.ndarray:
    """A deterministic synthetic image (no RNG): 80 x 96, grey or RGB as the contract reads it.

    Rings, a checkerboard and a bright block give every patch some structure; the
    non-square shape exercises the contract's resize rule.
    """
    h, w = 80, 96
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    r = np.hypot((yy - h / 2) / h, (xx - w / 2) / w)
    grey = 0.45 + 0.3 * np.cos(6 * np.pi * r) * np.exp(-2 * r) + 0.12 * ((xx // 8 + yy // 8) % 2)
    grey[10:25, 60:85] = 0.97
    grey = np.clip(grey, 0.0, 1.0)
    if contract.windows is not None or contract.stored_channels == 1:
        return np.round(grey * 255).astype(np.uint8)
    rgb = np.stack([grey, 0.1 + 0.8 * xx / w, 1.0 - 0.7 * grey], axis=-1)
    return np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def write_fixture(out: Path, image: str | Path | np.ndarray | None, contract: Contract) -> Path:
    from PIL import Image

    if image is None:
        image = fixture_array(contract)
    if isinstance(image, np.ndarray):
        if image.dtype not in (np.uint8, np.uint16) or image.ndim not in (2, 3):
            raise BadInputError(
                f"a fixture array must be uint8/uint16 (H, W) or (H, W, 3), got {image.dtype} {image.shape}"
            )
        path = out / "fixture.png"
        Image.fromarray(image).save(path)
        return path
    source = Path(image)
    if not source.is_file():
        raise BadInputError("fixture image not found", source=str(source))
    path = out / f"fixture{''.join(source.suffixes) or '.img'}"
    shutil.copyfile(source, path)
    return path


def write_reference(out: Path, exported: ExportedModel) -> list[str]:
    """The reference files (``.npy``, exact) and ``reference_embeddings.json`` (values and how they
    were made); returns the ``.npy`` file names."""
    x = exported.fixture_input()
    outputs = {name: value.numpy().astype(np.float32) for name, value in exported.reference_outputs().items()}
    for name, value in outputs.items():
        np.save(out / name, value)
    embedding = outputs[REFERENCE_NPY]
    reference = {
        "fixture": exported.config["fixture"]["file"],
        "pooling": exported.pooling,
        "shape": list(embedding.shape),
        "dtype": "float32",
        "device": "cpu",
        "torch_version": torch.__version__,
        "timm_version": package_version("timm"),
        "embedding": embedding[0].tolist(),
        "tolerance": {"rtol": REFERENCE_RTOL, "atol": REFERENCE_ATOL},
    }
    if exported.config.get("task"):
        reference["logits"] = exported.logits(x)[0].tolist()
    if exported.text is not None:
        model = exported.image_text
        image_latent, text_latent = outputs[REFERENCE_LATENTS_NPY]
        reference["transformers_version"] = package_version("transformers")
        reference["text"] = {"text": exported.reference_text, "file": REFERENCE_TEXT_NPY,
                             "embedding": outputs[REFERENCE_TEXT_NPY][0].tolist()}  # fmt: skip
        reference["latents"] = {
            "file": REFERENCE_LATENTS_NPY,
            "rows": ["fixture image", "reference text"],
            "normalized": model.normalize,
            "image": image_latent.tolist(),
            "text": text_latent.tolist(),
            "similarity": float(image_latent @ text_latent),
            "logit_scale": model.logit_scale,
        }
    write_json(out / REFERENCE_JSON, reference)
    return list(outputs)


# -- metadata --------------------------------------------------------------------------------


def bundle_metadata(run, config: dict[str, Any], contract: Contract, files: dict[str, str]) -> dict[str, Any]:
    """A MONAI-bundle-like ``metadata.json``: versions, intended use, data, I/O format, metrics, files."""
    low, high = normalized_range(contract)
    size = contract.size
    task = config.get("task")
    ev = run.evaluation or {}
    outputs: dict[str, Any] = {
        "embedding": {
            "type": "embedding",
            "num_channels": config["embed_dim"],
            "spatial_shape": [1],
            "dtype": "float32",
            "pooling": config["pooling"],
        }
    }
    inputs: dict[str, Any] = {}
    text = (config.get("towers") or {}).get("text")
    if text:
        spec, heads = text.get("spec") or {}, config.get("heads") or {}
        inputs["text"] = {"type": "text", "tokenizer": f"{text['path']}/", "max_length": spec.get("max_length"),
                          "lowercase": spec.get("lowercase")}  # fmt: skip
        outputs["text_embedding"] = {"type": "embedding", "num_channels": text.get("embed_dim"),
                                     "dtype": "float32", "pooling": spec.get("pool")}  # fmt: skip
        for side in ("image", "text"):
            shape = heads.get(f"{side}_projection")
            outputs[f"{side}_latent"] = {
                "type": "embedding",
                "num_channels": shape[0] if shape else None,
                "dtype": "float32",
                "projection": f"{side}_projection" if shape else None,
            }
    kind = "image-text embedding (zero-shot classification, retrieval)" if text else "image embedding"
    if task:
        kind = f"{task['type']} classification"
        outputs["pred"] = {
            "type": "probabilities",
            "num_channels": task["num_classes"],
            "spatial_shape": [1],
            "dtype": "float32",
            "activation": task["activation"],
            "channel_def": task.get("names"),
        }
    return {
        "schema": "greenfm.model-metadata/1 (fields after MONAI bundle metadata.json)",
        "version": "1.0",
        "changelog": {"1.0": f"exported from run '{run.name}' on {datetime.now(timezone.utc).date().isoformat()}"},
        "greenfm_version": greenfm.__version__,
        "pytorch_version": torch.__version__,
        "numpy_version": np.__version__,
        "required_packages_version": {
            "timm": package_version("timm"),
            "safetensors": package_version("safetensors"),
            **({"transformers": package_version("transformers"), "tokenizers": package_version("tokenizers")}
               if text else {}),
        },  # fmt: skip
        "name": run.name,
        "task": kind,
        "towers": {name: entry.get("path") for name, entry in (config.get("towers") or {}).items()},
        "description": f"{config['model'].get('name')} trained by greenfm {run.method or ''}".strip(),
        "intended_use": "Research use only; not for clinical decisions.",
        "data_source": {"manifest_hash": run.manifest_hash},
        "data_type": contract.modality,
        "image_classes": f"{contract.channels}-channel {contract.modality} image, {size[0]}x{size[1]}",
        "pred_classes": (task or {}).get("names"),
        "eval_metrics": {
            "macro_auroc": ev.get("macro_auroc"),
            "macro_auprc": ev.get("macro_auprc"),
            "macro_auroc_ci": ev.get("macro_auroc_ci"),
            "source": run.evaluation_source,
        },
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "magnitude",
                    "modality": contract.modality,
                    "num_channels": contract.channels,
                    "spatial_shape": list(contract.size),
                    "dtype": "float32",
                    "value_range": [float(low.min()), float(high.max())],
                    "is_patch_data": False,
                },
                **inputs,
            },
            "outputs": outputs,
        },
        "preprocessing_contract": contract.to_dict(),
        "contract_fingerprint": contract.fingerprint,
        "compute": {k: v for k, v in (run.compute or {}).items() if k not in ("run", "unavailable")} or "unavailable",
        "source_run": config["source_run"],
        "files": files,
    }
