"""Initial weights for an encoder: random, a local file, or a hub name (a convenience).

Local files are the offline path and load safely (safetensors, or a torch state
dict with ``weights_only=True``). timm- and DINOv2-style keys are both accepted:
the model family's own timm ``checkpoint_filter_fn`` remaps keys and resamples
position embeddings to the chosen image size, and timm's ``adapt_input_conv``
sums RGB stem weights for grey (``in_chans=1``) inputs. Loading is non-strict;
what did not fit is returned as a :class:`LoadReport` rather than raised.

Every load records where the weights came from (``weights_source``), so a run
can say when its initialisation has no pretrained source.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from greenfm.errors import BadInputError, ConfigError, GreenfmError

logger = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
HUB_FILES = ("model.safetensors", "pytorch_model.bin")
KINETICS_NAME = "torchvision:R3D_18_Weights.KINETICS400_V1"


@dataclass
class LoadReport:
    """What happened to the keys of a loaded state dict."""

    missing: list[str] = field(default_factory=list)  # model keys the file did not provide
    unexpected: list[str] = field(default_factory=list)  # file keys the model has no slot for
    skipped: list[str] = field(default_factory=list)  # "key: file shape -> model shape", left at init
    resampled: list[str] = field(default_factory=list)  # position embeddings resized to the model's grid
    adapted: list[str] = field(default_factory=list)  # input convs adapted to in_chans

    def to_dict(self) -> dict[str, list[str]]:
        return asdict(self)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A flat state dict from a safetensors file or a torch checkpoint (``weights_only=True``).

    timm's reader unwraps ``state_dict`` / ``model`` containers and DDP/compile prefixes.
    """
    from timm.models import load_state_dict

    path = Path(path)
    if not path.is_file():
        raise BadInputError("weights file not found", source=str(path))
    try:
        state = load_state_dict(str(path), use_ema=False, weights_only=True)
    except Exception as exc:  # safetensors, pickle and zip readers raise unrelated types
        raise BadInputError(
            f"cannot read weights ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "expected a .safetensors file or a torch state dict",
            source=str(path),
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BadInputError("not a state dict of tensors", source=str(path))
    return dict(state)


def _offline_error(name: str, url: str, exc: BaseException) -> GreenfmError:
    return GreenfmError(
        f"cannot fetch weights '{name}' ({type(exc).__name__}; no network or the hub is unreachable): "
        f"download them from {url} on a connected machine and pass weights='/path/to/model.safetensors'"
    )


def download_hub_weights(hub_id: str) -> Path:
    """Local path of ``model.safetensors`` (else ``pytorch_model.bin``) of a Hugging Face repo.

    ``hub_id`` is ``org/name`` with an optional ``@revision``.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    repo, _, revision = hub_id.partition("@")
    url = f"https://huggingface.co/{repo}"
    for filename in HUB_FILES:
        try:
            return Path(hf_hub_download(repo, filename, revision=revision or None))
        except EntryNotFoundError as exc:
            if isinstance(exc, LocalEntryNotFoundError):  # offline and not cached
                raise _offline_error(f"hf-hub:{hub_id}", url, exc) from None
            continue
        except Exception as exc:  # connection, HTTP and offline-mode errors come in many types
            raise _offline_error(f"hf-hub:{hub_id}", url, exc) from None
    raise GreenfmError(f"hub repo '{repo}' has none of {list(HUB_FILES)}; pass a local weights file instead")


def _timm_filter_fn(model: nn.Module):
    # timm wires each family's key converter (DINOv2/OpenAI/... remapping, pos-embed
    # resampling) as ``checkpoint_filter_fn`` in the model's own module.
    return getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)


def _first_convs(model: nn.Module) -> list[str]:
    first = (getattr(model, "pretrained_cfg", None) or {}).get("first_conv")
    if not first:
        return []
    return [first] if isinstance(first, str) else list(first)


def load_state_dict_into(model: nn.Module, state: dict[str, torch.Tensor]) -> LoadReport:
    """Load ``state`` non-strictly into ``model`` after timm's key conversion; report what did not fit."""
    from timm.models import adapt_input_conv

    report = LoadReport()
    state = dict(state)
    pos_before = tuple(state["pos_embed"].shape) if "pos_embed" in state else None
    filter_fn = _timm_filter_fn(model)
    if filter_fn is not None:
        state = filter_fn(state, model)
    if pos_before is not None and "pos_embed" in state and tuple(state["pos_embed"].shape) != pos_before:
        report.resampled.append(f"pos_embed: {pos_before} -> {tuple(state['pos_embed'].shape)}")

    target = model.state_dict()
    for conv in _first_convs(model):
        key = f"{conv}.weight"
        if key in state and key in target and state[key].ndim == 4 and state[key].shape[1] != target[key].shape[1]:
            state[key] = adapt_input_conv(target[key].shape[1], state[key])
            report.adapted.append(f"{key}: {state[key].shape[1]} input channel(s)")

    for key in list(state):
        if key in target and state[key].shape != target[key].shape:
            report.skipped.append(f"{key}: {tuple(state[key].shape)} -> {tuple(target[key].shape)}")
            del state[key]
    result = model.load_state_dict(state, strict=False)
    report.missing = list(result.missing_keys) + [s.split(":")[0] for s in report.skipped]
    report.unexpected = list(result.unexpected_keys)
    if report.missing or report.unexpected:
        logger.warning(
            "weights loaded non-strictly: %d missing (e.g. %s), %d unexpected (e.g. %s)",
            len(report.missing), report.missing[:3], len(report.unexpected), report.unexpected[:3],
        )
    return report


def _looks_like_path(ref: str) -> bool:
    return "/" in ref or "\\" in ref or ref.lower().endswith(WEIGHT_SUFFIXES)


def resolve_weights(weights: str | Path | None, model: nn.Module, *, library: str) -> tuple[dict[str, Any], Path | None]:
    """Turn a ``weights`` argument into (weights_source record, local file or None for random).

    Forms: ``"random"``; a local file (or a folder holding ``model.safetensors``);
    ``"hf-hub:org/name[@rev]"``; ``"timm"`` (the model name's timm pretrained tag);
    ``"torchvision"`` (Kinetics-400 for 3D ResNets, handled by the caller).
    """
    if weights is None or weights == "random":
        return {"kind": "random"}, None
    ref = str(weights)
    if ref.startswith("hf-hub:"):
        hub_id = ref[len("hf-hub:"):]
        path = download_hub_weights(hub_id)
        return {"kind": "hub", "name": ref, "path": str(path), "sha256": file_sha256(path)}, path
    if ref == "timm":
        if library != "timm":
            raise ConfigError("weights='timm' applies to timm models only; pass a local weights file")
        cfg = getattr(model, "pretrained_cfg", None) or {}
        hub_id = cfg.get("hf_hub_id")
        if not hub_id:
            raise ConfigError(
                f"timm has no hub weights for '{cfg.get('architecture')}'; pass a local weights file"
            )
        path = download_hub_weights(hub_id)
        name = f"hf-hub:{hub_id}"
        return {"kind": "hub", "name": name, "path": str(path), "sha256": file_sha256(path)}, path
    path = Path(ref).expanduser()
    if path.is_dir():
        candidates = [path / f for f in HUB_FILES if (path / f).is_file()]
        if not candidates:
            raise BadInputError(f"folder holds none of {list(HUB_FILES)}", source=str(path))
        path = candidates[0]
    if path.is_file():
        path = path.resolve()
        return {"kind": "file", "path": str(path), "sha256": file_sha256(path)}, path
    if _looks_like_path(ref):
        raise BadInputError("weights file not found", source=ref)
    raise ConfigError(
        f"unknown weights '{ref}': use 'random', a local .safetensors/.pth file, "
        "'hf-hub:org/name' or 'timm' (the model name's pretrained tag)"
    )


def load_kinetics_r3d(model: nn.Module) -> tuple[dict[str, Any], LoadReport]:
    """Kinetics-400 weights of torchvision ``r3d_18`` (the replaced stem stays at its init)."""
    from torchvision.models.video import R3D_18_Weights

    entry = R3D_18_Weights.KINETICS400_V1
    try:
        state = entry.get_state_dict(progress=False, weights_only=True)
    except Exception as exc:  # urllib/socket errors when offline
        raise _offline_error(KINETICS_NAME, entry.url, exc) from None
    report = load_state_dict_into(model, state)
    return {"kind": "hub", "name": KINETICS_NAME, "url": entry.url}, report


def load_weights(model: nn.Module, weights: str | Path | None, *, library: str) -> tuple[dict[str, Any], LoadReport]:
    """Load ``weights`` into ``model`` in place; returns (weights_source, report)."""
    if library == "torchvision" and str(weights) == "torchvision":
        return load_kinetics_r3d(model)
    source, path = resolve_weights(weights, model, library=library)
    if path is None:
        return source, LoadReport()
    state = read_state_dict(path)
    report = load_state_dict_into(model, state)
    if len(report.missing) == len(model.state_dict()):
        raise BadInputError(
            f"no tensor in the file fits this model (file keys start {sorted(state)[:3]}); "
            "is it another architecture, or a training checkpoint rather than model weights?",
            source=str(path),
        )
    logger.info("loaded weights from %s", source.get("name", source.get("path")))
    return source, report
