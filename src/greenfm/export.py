"""``export_model``: a run folder -> a self-describing model folder; ``load_exported`` reads it back, checked.

::

    MODEL_DIR/
      model.safetensors          weights of a plain timm model (LoRA merged into the backbone)
      config.json                timm name + kwargs (``Encoder.spec``), pooling, head, contract
      contract.json              the preprocessing contract (``greenfm.data.contract.Contract``)
      metadata.json              machine-readable card (after MONAI bundles) + sha256 of every checked file
      MODEL_CARD.md              the human-readable card (``greenfm.report.card``)
      fixture.png                a deterministic synthetic image (or the image the user gave)
      reference_embeddings.npy   its embedding, float32, computed on CPU by the loader itself
      reference_embeddings.json  the same values with how they were made (and logits for a classifier)

Runs it understands: a method that exported an encoder (``exported/model.safetensors`` +
``config.json``, e.g. token reconstruction), the engine's ``exported/last.safetensors`` or
``checkpoints/last.ckpt`` of an encoder method, and fine-tuning runs
(``exported/best.safetensors``, else ``checkpoints/best.ckpt`` / ``last.ckpt`` with LoRA merged
here). A fine-tuned ``ViTClassifier`` (no final norm, patch-token mean, ``fc_norm``, linear head)
is exactly timm's ViT with ``global_pool="avg"``, so it too exports as a plain timm model.

This module sits above ``adapt``, ``methods`` and ``report`` (it reads what they write) and
below ``api``; nothing in those layers imports it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import greenfm
from greenfm.data.contract import Contract, check_compatible, get_contract, normalize, normalized_range
from greenfm.errors import BadInputError, ConfigError, GreenfmError
from greenfm.models.backbones import Encoder, build_model

log = logging.getLogger(__name__)

EXPORT_FORMAT = "greenfm.model/1"
WEIGHTS, CONFIG, CONTRACT, METADATA, CARD = "model.safetensors", "config.json", "contract.json", "metadata.json", "MODEL_CARD.md"
REFERENCE_NPY, REFERENCE_JSON = "reference_embeddings.npy", "reference_embeddings.json"
PRE_LOGITS = "pre-logits"  # timm's forward_head(pre_logits=True): the classifier's own embedding
POOL_RECIPES = {
    "mean-all-tokens": "model.forward_features(x).mean(dim=1)",
    "mean-patch-tokens": "model.forward_features(x)[:, model.num_prefix_tokens:].mean(dim=1)",
    "cls": "model.forward_features(x)[:, 0]",
    "avg": "model.forward_features(x).mean(dim=(2, 3))",
    PRE_LOGITS: "model.forward_head(model.forward_features(x), pre_logits=True)",
}
# Reference embeddings are bit-exact on the machine that wrote them; elsewhere CPU kernels may
# differ in the last bits, so the load-time check allows float32 round-off, not a changed model.
REFERENCE_RTOL, REFERENCE_ATOL = 1e-3, 1e-4


@dataclass
class ExportedModel:
    """A loaded export: the plain timm ``model`` plus what greenfm checked and needs to embed."""

    path: Path
    model: nn.Module
    contract: Contract
    pooling: str
    config: dict[str, Any]
    metadata: dict[str, Any]

    @property
    def encoder(self) -> Encoder:
        return Encoder(self.model, self.config["model"], preprocessing=self.contract.to_dict())

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) model input, prepared per the contract -> (B, D) float32 embeddings."""
        x = x.to(torch.float32)
        if self.pooling == PRE_LOGITS:
            return self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        return self.encoder.embed(x, self.pooling)

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, num_classes) logits of a fine-tuned classifier."""
        if not self.config.get("task"):
            raise ConfigError(f"{self.path}: this export is an encoder without a classification head")
        return self.model(x.to(torch.float32))

    def preprocess_file(self, image: str | Path) -> torch.Tensor:
        """Decode an image file and prepare it per the contract: (1, C, H, W) float32."""
        from greenfm.data.dataset import decode_to_contract

        return normalize(torch.from_numpy(decode_to_contract(image, self.contract)), self.contract).unsqueeze(0)

    def embed_file(self, image: str | Path) -> torch.Tensor:
        """The (D,) embedding of one image file."""
        return self.embed(self.preprocess_file(image))[0]

    def fixture_input(self) -> torch.Tensor:
        return self.preprocess_file(self.path / self.config["fixture"]["file"])

    def verify_reference(self) -> None:
        """Refuse (``GreenfmError``) an export that no longer reproduces its reference embeddings."""
        stored = torch.from_numpy(np.load(self.path / REFERENCE_NPY))
        now = self.embed(self.fixture_input())
        if stored.shape != now.shape or not torch.allclose(now, stored, rtol=REFERENCE_RTOL, atol=REFERENCE_ATOL):
            diff = (now - stored).abs().max().item() if stored.shape == now.shape else float("nan")
            raise BadInputError(f"the model does not reproduce its reference embeddings (max difference {diff:.3g}); "
                                "the export is damaged or needs another timm/torch", source=str(self.path))  # fmt: skip


# -- loading --------------------------------------------------------------------------------


def load_exported(
    model_dir: str | Path, *, contract: str | Path | Contract | None = None, verify: bool = True
) -> ExportedModel:
    """Load an export, refusing (one-line ``GreenfmError``) anything tampered with or mismatched.

    Checks, in order: the files are there; ``contract.json`` agrees with ``config.json``;
    ``contract`` (the pipeline's own, when given) agrees with the export's; every checked
    file has the sha256 recorded in ``metadata.json``; the weights fit the architecture;
    and (``verify``) the fixture image still gives the reference embeddings.
    """
    root = Path(model_dir)
    for name in (CONFIG, CONTRACT, METADATA, WEIGHTS):
        if not (root / name).is_file():
            raise BadInputError(f"not a greenfm model export ({name} is missing)", source=str(root))
    config, metadata = _read_json(root / CONFIG), _read_json(root / METADATA)
    if config.get("format") != EXPORT_FORMAT:
        raise BadInputError(f"unsupported export format {config.get('format')!r} (expected {EXPORT_FORMAT})",
                            source=str(root / CONFIG))  # fmt: skip
    found = Contract.from_dict(_read_json(root / CONTRACT), source=str(root / CONTRACT))
    check_compatible(config.get("contract") or {}, found, str(root / CONTRACT))
    if contract is not None:
        check_compatible(get_contract(contract), found, f"export {root}")
    for name, digest in (metadata.get("files") or {}).items():
        path = root / name
        if not path.is_file():
            raise BadInputError(f"{name} is missing from the export", source=str(root))
        if _sha256(path) != digest:
            raise BadInputError(f"{name} was changed after export (sha256 differs from metadata.json); "
                                "re-export it from its run", source=str(root))  # fmt: skip
    exported = _open(root, config, found, metadata)
    if verify:
        exported.verify_reference()
    return exported


def _open(root: Path, config: dict[str, Any], contract: Contract, metadata: dict[str, Any]) -> ExportedModel:
    from safetensors.torch import load_file

    with torch.random.fork_rng(devices=[]):  # building the architecture must not move the caller's RNG
        model = build_model(config["model"])
    try:
        model.load_state_dict(load_file(str(root / WEIGHTS)), strict=True)
    except (RuntimeError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadInputError(f"weights do not fit {config['model'].get('name')} ({first})", source=str(root / WEIGHTS)) from None
    return ExportedModel(root, model.eval(), contract, config["pooling"], config, metadata)


# -- exporting ------------------------------------------------------------------------------


@dataclass
class _Weights:
    """A run's model, reduced to a plain timm architecture and its state dict."""

    spec: dict[str, Any]
    state: dict[str, torch.Tensor]
    pooling: str | None
    source: str
    task: dict[str, Any] | None = None
    lora_merged: bool = False


def export_model(
    run_dir: Path,
    out: Path,
    *,
    fixture_image: str | Path | np.ndarray | None = None,
    contract: str | Path | Contract | None = None,
    pool: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Export the model of ``run_dir`` to the folder ``out`` (see the module docstring); returns ``out``.

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
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise BadInputError("export folder is not empty; choose a new folder or pass overwrite", source=str(out))
    found = _contract(run, contract)
    weights = _classifier_weights(run) if _is_finetune(run) else _encoder_weights(run, pool)
    out.mkdir(parents=True, exist_ok=True)

    from safetensors.torch import save_file

    with torch.random.fork_rng(devices=[]):
        model = build_model(weights.spec)
    try:
        model.load_state_dict(weights.state, strict=True)
    except RuntimeError as exc:
        raise GreenfmError(f"{run_dir}: the run's weights ({weights.source}) are not a plain "
                           f"{weights.spec.get('name')} ({str(exc).splitlines()[0]})") from None  # fmt: skip
    _check_fits(model, found, run_dir)
    encoder = Encoder(model, weights.spec)
    if weights.pooling != PRE_LOGITS:
        weights.pooling = encoder.resolve_pool(weights.pooling)
    state = {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).contiguous()
             for k, v in model.state_dict().items()}  # fmt: skip
    save_file(state, str(out / WEIGHTS), metadata={"format": "pt", "greenfm": json.dumps({"format": EXPORT_FORMAT})})
    fixture = _write_fixture(out, fixture_image, found)
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
        "source_run": {"path": str(run_dir.resolve()), "method": run.method, "weights": weights.source,
                       "lora_merged": weights.lora_merged},  # fmt: skip
    }
    _write_json(out / CONFIG, config)
    _write_json(out / CONTRACT, found.to_dict())
    _write_reference(out, _open(out, config, found, {}))
    checked = [WEIGHTS, CONFIG, CONTRACT, fixture.name, REFERENCE_NPY, REFERENCE_JSON]
    metadata = _bundle_metadata(run, config, found, {name: _sha256(out / name) for name in checked})
    from greenfm.report.card import model_card
    from greenfm.report.runs import describe_data

    run.n_parameters = config["n_parameters"]
    (out / CARD).write_text(model_card(run.name, config, metadata, run, describe_data(run)), encoding="utf-8")
    _write_json(out / METADATA, metadata)
    log.info("exported %s to %s", run_dir, out)
    return out


def _is_finetune(run) -> bool:
    return run.finetune is not None or run.record.get("method") == "finetune"


def _encoder_weights(run, pool: str | None) -> _Weights:
    from safetensors.torch import load_file

    root, export_config = run.root, run.export_config or {}
    pooling = pool or export_config.get("default_pool") or (run.config or {}).get("pool")
    if export_config.get("model") and (root / "exported" / WEIGHTS).is_file():
        spec, source = export_config["model"], f"exported/{WEIGHTS}"
        state = load_file(str(root / source))
    elif (root / "exported" / "last.safetensors").is_file():
        spec, source = _spec(run), "exported/last.safetensors"
        state = load_file(str(root / source))
    elif (root / "checkpoints" / "last.ckpt").is_file():
        from greenfm.engine.checkpoint import load_checkpoint

        spec, source = _spec(run), "checkpoints/last.ckpt"
        full = load_checkpoint(root / source)["model"]
        prefix = "encoder.model."  # an encoder method keeps its timm model under encoder.model
        state = {k[len(prefix) :]: v for k, v in full.items() if k.startswith(prefix)}
        if not state:
            raise GreenfmError(f"{root / source}: holds no encoder weights (no '{prefix}*' keys)")
    else:
        raise BadInputError("no weights to export (exported/*.safetensors or checkpoints/last.ckpt)", source=str(root))
    return _Weights(spec, state, pooling, source)  # pooling None: the encoder's default


def _classifier_weights(run) -> _Weights:
    """A fine-tuned ViTClassifier as timm's avg-pool ViT: backbone.* -> *, head.fc_norm -> fc_norm, head.fc -> head."""
    from safetensors.torch import load_file

    root, spec = run.root, _spec(run)
    classifier = run.record.get("classifier") or (run.finetune or {}).get("classifier")
    if not isinstance(classifier, dict) or "num_classes" not in classifier:
        raise GreenfmError(f"{root}: the fine-tuning run records no classifier config (finetune.json 'classifier')")
    task_type = run.record.get("task") or "multilabel"
    merged = False
    if (root / "exported" / "best.safetensors").is_file():
        source, state = "exported/best.safetensors", load_file(str(root / "exported" / "best.safetensors"))
        merged = classifier.get("mode") == "lora"  # the fine-tuning export already merged LoRA
    else:
        source = next((f"checkpoints/{n}" for n in ("best.ckpt", "last.ckpt") if (root / "checkpoints" / n).is_file()), None)
        if source is None:
            raise BadInputError("no fine-tuned weights (exported/best.safetensors or checkpoints/*.ckpt)", source=str(root))
        state, merged = _merged_classifier_state(root / source, spec, classifier, task_type)
    plain = {}
    for key, value in state.items():
        for old, new in (("backbone.", ""), ("head.fc_norm.", "fc_norm."), ("head.fc.", "head.")):
            if key.startswith(old):
                plain[new + key[len(old) :]] = value
                break
        else:
            raise GreenfmError(f"{root / source}: unexpected key {key!r} for a fine-tuned ViT classifier")
    kwargs = {**spec["kwargs"], "num_classes": int(classifier["num_classes"]), "global_pool": "avg", "fc_norm": True}
    names = [f.get("name") for f in ((run.finetune or {}).get("test") or {}).get("findings") or []]
    task = {"type": task_type, "num_classes": int(classifier["num_classes"]), "names": names or None,
            "activation": "softmax" if task_type == "multiclass" else "sigmoid", "adaptation": classifier.get("mode")}  # fmt: skip
    return _Weights({**spec, "kwargs": kwargs}, plain, PRE_LOGITS, source, task, merged)


def _merged_classifier_state(path: Path, spec, classifier: dict[str, Any], task: str):
    """Rebuild the trained classifier (with its LoRA adapters) from a checkpoint and merge LoRA."""
    from greenfm.adapt.classifier import ClassifierConfig, build_classifier
    from greenfm.adapt.objective import ClassifierMethod
    from greenfm.engine.checkpoint import load_checkpoint

    state = load_checkpoint(path)["model"]
    with torch.random.fork_rng(devices=[]):
        model = build_classifier(build_model(spec), ClassifierConfig(**classifier))
    method = ClassifierMethod(model, task=task, pos_weight=state.get("pos_weight"))
    method.load_state_dict(state, strict=True)
    method.eval()
    merged = method.export_model()
    return merged.state_dict(), classifier.get("mode") == "lora"


def _spec(run) -> dict[str, Any]:
    """The backbone's timm spec, from the run record, the config, or the method's export."""
    for value in (run.record.get("encoder_spec"), run.record.get("encoder"), (run.config or {}).get("encoder_spec"),
                  (run.config or {}).get("encoder"), (run.export_config or {}).get("model")):  # fmt: skip
        if isinstance(value, dict) and {"library", "name", "kwargs"} <= set(value):
            return value
        if isinstance(value, dict) and isinstance(value.get("name"), str):
            from greenfm.models.backbones import create_encoder

            options = {k: value[k] for k in ("img_size", "in_chans") if value.get(k) is not None}
            return create_encoder(value["name"], weights="random", **options).spec
    raise GreenfmError(f"{run.root}: the run does not record its backbone (no 'encoder_spec' in the run record "
                       "or config.yaml), so its weights cannot be rebuilt")  # fmt: skip


def _contract(run, given: str | Path | Contract | None) -> Contract:
    """The run's recorded contract (record, config, method export); ``given`` only fills a gap."""
    recorded = None
    for value in (run.record.get("contract"), (run.config or {}).get("contract"),
                  (run.export_config or {}).get("preprocessing")):  # fmt: skip
        if value is None:
            continue
        if isinstance(value, dict) and "resize_rule" in value:
            value = _legacy_contract(value)
        recorded = value if isinstance(value, Contract) else get_contract(value) if isinstance(value, str) else \
            Contract.from_dict(value, source=f"{run.root} contract")  # fmt: skip
        break
    if given is not None:
        chosen = get_contract(given)
        if recorded is not None:
            check_compatible(recorded, chosen, f"--contract for run {run.root}")
        return chosen
    if recorded is None:
        raise ConfigError(f"{run.root}: the run records no preprocessing contract; give one (a preset or a JSON file)")
    return recorded


def _legacy_contract(pre: dict[str, Any]) -> Contract:
    """The preprocessing dict of ``greenfm.models.export.default_preprocessing`` as a Contract."""
    rule = {"resize-square": "squash"}.get(pre.get("resize_rule"), pre.get("resize_rule"))
    return Contract.from_dict({"size": tuple(pre["resize"]), "resize": rule, "interpolation": pre.get("interpolation", "bilinear"),
                               "antialias": pre.get("antialias", True), "channels": pre.get("channels", 3),
                               "mean": pre.get("mean", 0.5), "std": pre.get("std", 0.5)}, source="exported/config.json")  # fmt: skip


def _check_fits(model: nn.Module, contract: Contract, run_dir: Path) -> None:
    size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if size is not None and not getattr(model, "dynamic_img_size", False) and tuple(size) != tuple(contract.size):
        raise ConfigError(f"{run_dir}: the model takes {tuple(size)} images but the contract gives {tuple(contract.size)}")
    chans = getattr(getattr(getattr(model, "patch_embed", None), "proj", None), "in_channels", None)
    if chans is not None and chans != contract.channels:
        raise ConfigError(f"{run_dir}: the model takes {chans} channel(s) but the contract gives {contract.channels}")


# -- fixture and reference embeddings ---------------------------------------------------------


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


def _write_fixture(out: Path, image: str | Path | np.ndarray | None, contract: Contract) -> Path:
    from PIL import Image

    if image is None:
        image = fixture_array(contract)
    if isinstance(image, np.ndarray):
        if image.dtype not in (np.uint8, np.uint16) or image.ndim not in (2, 3):
            raise BadInputError(f"a fixture array must be uint8/uint16 (H, W) or (H, W, 3), got {image.dtype} {image.shape}")
        path = out / "fixture.png"
        Image.fromarray(image).save(path)
        return path
    source = Path(image)
    if not source.is_file():
        raise BadInputError("fixture image not found", source=str(source))
    path = out / f"fixture{''.join(source.suffixes) or '.img'}"
    shutil.copyfile(source, path)
    return path


def _write_reference(out: Path, exported: ExportedModel) -> None:
    x = exported.fixture_input()
    embedding = exported.embed(x).cpu().numpy().astype(np.float32)
    np.save(out / REFERENCE_NPY, embedding)
    reference = {
        "fixture": exported.config["fixture"]["file"],
        "pooling": exported.pooling,
        "shape": list(embedding.shape),
        "dtype": "float32",
        "device": "cpu",
        "torch_version": torch.__version__,
        "timm_version": _version("timm"),
        "embedding": embedding[0].tolist(),
        "tolerance": {"rtol": REFERENCE_RTOL, "atol": REFERENCE_ATOL},
    }
    if exported.config.get("task"):
        reference["logits"] = exported.logits(x)[0].tolist()
    _write_json(out / REFERENCE_JSON, reference)


# -- metadata ---------------------------------------------------------------------------------


def _bundle_metadata(run, config: dict[str, Any], contract: Contract, files: dict[str, str]) -> dict[str, Any]:
    """A MONAI-bundle-like ``metadata.json``: versions, intended use, data, I/O format, metrics, files."""
    low, high = normalized_range(contract)
    task = config.get("task")
    ev = run.evaluation or {}
    outputs: dict[str, Any] = {"embedding": {"type": "embedding", "num_channels": config["embed_dim"],
                                             "spatial_shape": [1], "dtype": "float32", "pooling": config["pooling"]}}  # fmt: skip
    if task:
        outputs["pred"] = {"type": "probabilities", "num_channels": task["num_classes"], "spatial_shape": [1],
                           "dtype": "float32", "activation": task["activation"], "channel_def": task.get("names")}  # fmt: skip
    return {
        "schema": "greenfm.model-metadata/1 (fields after MONAI bundle metadata.json)",
        "version": "1.0",
        "changelog": {"1.0": f"exported from run '{run.name}' on {datetime.now(timezone.utc).date().isoformat()}"},
        "greenfm_version": greenfm.__version__,
        "pytorch_version": torch.__version__,
        "numpy_version": np.__version__,
        "required_packages_version": {"timm": _version("timm"), "safetensors": _version("safetensors")},
        "name": run.name,
        "task": f"{task['type']} classification" if task else "image embedding",
        "description": f"{config['model'].get('name')} trained by greenfm {run.method or ''}".strip(),
        "intended_use": "Research use only; not for clinical decisions.",
        "data_source": {"manifest_hash": run.manifest_hash},
        "data_type": contract.modality,
        "image_classes": f"{contract.channels}-channel {contract.modality} image, {contract.size[0]}x{contract.size[1]}",
        "pred_classes": (task or {}).get("names"),
        "eval_metrics": {"macro_auroc": ev.get("macro_auroc"), "macro_auprc": ev.get("macro_auprc"),
                         "macro_auroc_ci": ev.get("macro_auroc_ci"), "source": run.evaluation_source},  # fmt: skip
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "magnitude", "modality": contract.modality,
                                 "num_channels": contract.channels, "spatial_shape": list(contract.size),
                                 "dtype": "float32", "value_range": [float(low.min()), float(high.max())],
                                 "is_patch_data": False}},  # fmt: skip
            "outputs": outputs,
        },
        "preprocessing_contract": contract.to_dict(),
        "contract_fingerprint": contract.fingerprint,
        "compute": {k: v for k, v in (run.compute or {}).items() if k not in ("run", "unavailable")} or "unavailable",
        "source_run": config["source_run"],
        "files": files,
    }


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInputError(f"unreadable JSON ({str(exc).splitlines()[0]})", source=str(path)) from None
    if not isinstance(data, dict):
        raise BadInputError("expected a JSON object", source=str(path))
    return data


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
