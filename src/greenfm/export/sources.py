"""What a run folder holds, reduced to a plain timm model: its spec, weights, pooling and contract.

Encoder runs: a method's own export (``exported/model.safetensors`` + ``config.json``, with
any further towers it lists, ``text/``, and ``heads.safetensors``: :func:`copy_run_towers`), else
the engine's ``exported/last.safetensors``, else ``checkpoints/last.ckpt`` (the timm model
under ``encoder.model``). Fine-tuning runs: ``exported/best.safetensors`` (LoRA already
merged), else ``checkpoints/best.ckpt`` / ``last.ckpt``, rebuilt with its adapters and merged
here. A fine-tuned ``ViTClassifier`` (no final norm, patch-token mean, ``fc_norm``, linear
head) is exactly timm's ViT with ``global_pool="avg"``, so its keys map one to one.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from greenfm.data.contract import Contract, check_compatible, get_contract
from greenfm.errors import BadInputError, ConfigError, GreenfmError
from greenfm.export.loader import HEADS, PRE_LOGITS, WEIGHTS
from greenfm.models.backbones import build_model
from greenfm.models.export import tower_folder


@dataclass
class RunWeights:
    """A run's model, reduced to a plain timm architecture and its state dict."""

    spec: dict[str, Any]
    state: dict[str, torch.Tensor]
    pooling: str | None
    source: str
    task: dict[str, Any] | None = None
    lora_merged: bool = False


def run_weights(run, pool: str | None = None) -> RunWeights:
    """The run's model as a plain timm spec + state dict (fine-tuned classifier or encoder)."""
    return _classifier_weights(run) if _is_finetune(run) else _encoder_weights(run, pool)


def _is_finetune(run) -> bool:
    return run.finetune is not None or run.record.get("method") == "finetune"


def _encoder_weights(run, pool: str | None) -> RunWeights:
    from safetensors.torch import load_file

    root, export_config = run.root, run.export_config or {}
    flags = (export_config.get("metadata") or {}).get("flags") or {}
    recipe_pool = flags.get("image_pool") if len(export_config.get("towers") or {}) > 1 else None
    # an image-text recipe projects the image tower's embedding with its own pooling: export that one
    pooling = pool or recipe_pool or export_config.get("default_pool") or (run.config or {}).get("pool")
    if export_config.get("model") and (root / "exported" / WEIGHTS).is_file():
        spec, source = export_config["model"], f"exported/{WEIGHTS}"
        state = load_file(str(root / source))
    elif (root / "exported" / "last.safetensors").is_file():
        spec, source = backbone_spec(run), "exported/last.safetensors"
        state = load_file(str(root / source))
    elif (root / "checkpoints" / "last.ckpt").is_file():
        from greenfm.engine.checkpoint import load_checkpoint

        spec, source = backbone_spec(run), "checkpoints/last.ckpt"
        full = load_checkpoint(root / source)["model"]
        prefix = "encoder.model."  # an encoder method keeps its timm model under encoder.model
        state = {k[len(prefix) :]: v for k, v in full.items() if k.startswith(prefix)}
        if not state:
            raise GreenfmError(f"{root / source}: holds no encoder weights (no '{prefix}*' keys)")
    else:
        raise BadInputError("no weights to export (exported/*.safetensors or checkpoints/last.ckpt)", source=str(root))
    return RunWeights(spec, state, pooling, source)  # pooling None: the encoder's default


def copy_run_towers(run, out: Path) -> tuple[dict[str, Any], dict[str, list[int]]]:
    """Copy the towers beside the image tower (``text/``) and ``heads.safetensors`` of the run's
    ``exported/`` into ``out``, byte for byte; returns ``config.json``'s ``towers`` and ``heads``."""
    from safetensors import SafetensorError, safe_open

    exported, export_config = run.root / "exported", run.export_config or {}
    towers: dict[str, Any] = {"image": {"path": ".", "kind": "image"}}
    if not (exported / WEIGHTS).is_file() or not export_config.get("model"):
        return towers, {}  # the image tower came from elsewhere (engine weights, a checkpoint)
    for name, entry in (export_config.get("towers") or {}).items():
        if name == "image":
            continue
        if not isinstance(entry, dict) or entry.get("kind") != "text":
            raise GreenfmError(f"{exported}: tower '{name}' is not a text tower; greenfm exports image and text towers")
        source = tower_folder(exported, entry)
        if not source.is_dir():
            raise BadInputError(f"the run's {name} tower folder is missing", source=str(source))
        shutil.copytree(source, out / source.name)
        towers[name] = dict(entry)
    heads: dict[str, list[int]] = {}
    if (exported / HEADS).is_file():
        shutil.copyfile(exported / HEADS, out / HEADS)
        try:
            with safe_open(str(out / HEADS), framework="pt") as f:
                heads = {key: list(f.get_slice(key).get_shape()) for key in f.keys()}
        except (OSError, SafetensorError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise BadInputError(f"unreadable heads ({first})", source=str(exported / HEADS)) from None
    return towers, heads


def _classifier_weights(run) -> RunWeights:
    """A fine-tuned ViTClassifier as timm's avg-pool ViT: backbone.* -> *, head.fc_norm -> fc_norm, head.fc -> head."""
    from safetensors.torch import load_file

    root, spec = run.root, backbone_spec(run)
    classifier = run.record.get("classifier") or (run.finetune or {}).get("classifier")
    if not isinstance(classifier, dict) or "num_classes" not in classifier:
        raise GreenfmError(f"{root}: the fine-tuning run records no classifier config (finetune.json 'classifier')")
    task_type = run.record.get("task") or "multilabel"
    merged = False
    if (root / "exported" / "best.safetensors").is_file():
        source, state = "exported/best.safetensors", load_file(str(root / "exported" / "best.safetensors"))
        merged = classifier.get("mode") == "lora"  # the fine-tuning export already merged LoRA
    else:
        source = next(
            (f"checkpoints/{n}" for n in ("best.ckpt", "last.ckpt") if (root / "checkpoints" / n).is_file()), None
        )
        if source is None:
            raise BadInputError(
                "no fine-tuned weights (exported/best.safetensors or checkpoints/*.ckpt)", source=str(root)
            )
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
    task = {
        "type": task_type,
        "num_classes": int(classifier["num_classes"]),
        "names": names or None,
        "activation": "softmax" if task_type == "multiclass" else "sigmoid",
        "adaptation": classifier.get("mode"),
    }
    return RunWeights({**spec, "kwargs": kwargs}, plain, PRE_LOGITS, source, task, merged)


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


def backbone_spec(run) -> dict[str, Any]:
    """The backbone's timm spec: recorded by the run, else read from the model the run started from.

    Looked for in order: ``encoder_spec`` / ``encoder`` of the run record or ``config.yaml``;
    the method's own ``exported/config.json``; the ``config.json`` of the run or export folder
    the run started from (``model_ref``, or ``model`` of a ``finetune:`` config); the
    ``backbone`` name (with ``img_size``) as a last resort.
    """
    from greenfm.models.backbones import create_encoder

    config = run.config or {}
    section = config.get("finetune") if isinstance(config.get("finetune"), dict) else {}
    for value in (
        run.record.get("encoder_spec"),
        run.record.get("encoder"),
        config.get("encoder_spec"),
        config.get("encoder"),
        (run.export_config or {}).get("model"),
        _spec_of_folder(run.root, run.record.get("model_ref")),
        _spec_of_folder(run.root, section.get("model")),
    ):
        if isinstance(value, dict) and {"library", "name", "kwargs"} <= set(value):
            return value
        if isinstance(value, dict) and isinstance(value.get("name"), str):
            options = {k: value[k] for k in ("img_size", "in_chans") if value.get(k) is not None}
            return create_encoder(value["name"], weights="random", **options).spec
    backbone = run.record.get("backbone") or section.get("backbone")
    if isinstance(backbone, str) and backbone:
        img_size = section.get("img_size") or config.get("img_size")
        return create_encoder(backbone, weights="random", img_size=img_size).spec
    raise GreenfmError(
        f"{run.root}: the run does not record its backbone (no 'encoder_spec' in the run record "
        "or config.yaml), so its weights cannot be rebuilt"
    )


def _spec_of_folder(root: Path, ref: Any) -> dict[str, Any] | None:
    """The ``model`` spec in the ``config.json`` of a run or export folder named by ``ref``."""
    if not isinstance(ref, str) or not ref:
        return None
    for base in (Path(ref).expanduser(), root / ref):
        for path in (base / "exported" / "config.json", base / "config.json"):
            try:
                model = json.loads(path.read_text()).get("model") if path.is_file() else None
            except (OSError, ValueError, AttributeError):  # not a readable export config
                model = None
            if isinstance(model, dict):
                return model
    return None


def resolve_contract(run, given: str | Path | Contract | None) -> Contract:
    """The run's recorded contract (record, config, method export); ``given`` only fills a gap."""
    recorded = None
    for value in (
        run.record.get("contract"),
        (run.config or {}).get("contract"),
        (run.export_config or {}).get("preprocessing"),
    ):
        if value is None:
            continue
        if isinstance(value, dict) and "resize_rule" in value:
            value = legacy_contract(value)
        recorded = (
            value
            if isinstance(value, Contract)
            else get_contract(value)
            if isinstance(value, str)
            else Contract.from_dict(value, source=f"{run.root} contract")
        )
        break
    if given is not None:
        chosen = get_contract(given)
        if recorded is not None:
            check_compatible(recorded, chosen, f"--contract for run {run.root}")
        return chosen
    if recorded is None:
        raise ConfigError(f"{run.root}: the run records no preprocessing contract; give one (a preset or a JSON file)")
    return recorded


def legacy_contract(pre: dict[str, Any]) -> Contract:
    """The preprocessing dict of ``greenfm.models.export.default_preprocessing`` as a Contract."""
    rule = {"resize-square": "squash"}.get(pre.get("resize_rule"), pre.get("resize_rule"))
    return Contract.from_dict(
        {
            "size": tuple(pre["resize"]),
            "resize": rule,
            "interpolation": pre.get("interpolation", "bilinear"),
            "antialias": pre.get("antialias", True),
            "channels": pre.get("channels", 3),
            "mean": pre.get("mean", 0.5),
            "std": pre.get("std", 0.5),
        },
        source="exported/config.json",
    )


def check_fits(model: nn.Module, contract: Contract, run_dir: Path) -> None:
    size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if size is not None and not getattr(model, "dynamic_img_size", False) and tuple(size) != tuple(contract.size):
        raise ConfigError(
            f"{run_dir}: the model takes {tuple(size)} images but the contract gives {tuple(contract.size)}"
        )
    chans = getattr(getattr(getattr(model, "patch_embed", None), "proj", None), "in_channels", None)
    if chans is not None and chans != contract.channels:
        raise ConfigError(f"{run_dir}: the model takes {chans} channel(s) but the contract gives {contract.channels}")
