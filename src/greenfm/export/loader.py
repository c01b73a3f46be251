"""Reading an export back: ``load_exported`` checks it, ``ExportedModel`` embeds with it.

See ``greenfm.export`` for the folder layout. Loading refuses, with one line, an
export whose files changed after export, whose contract disagrees with its config
or with the caller's pipeline, or that no longer reproduces its reference embeddings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from greenfm.data.contract import Contract, check_compatible, get_contract, normalize
from greenfm.errors import BadInputError, ConfigError
from greenfm.models.backbones import Encoder, build_model
from greenfm.models.weights import file_sha256 as sha256_file

EXPORT_FORMAT = "greenfm.model/1"
WEIGHTS, CONFIG, CONTRACT, METADATA, CARD = (
    "model.safetensors",
    "config.json",
    "contract.json",
    "metadata.json",
    "MODEL_CARD.md",
)
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

    @cached_property
    def encoder(self) -> Encoder:
        """The model as a greenfm ``Encoder``: its contract, its weights file as the source, its pooling."""
        weights = self.path / WEIGHTS
        digest = (self.metadata.get("files") or {}).get(WEIGHTS) or sha256_file(weights)
        encoder = Encoder(self.model, self.config["model"], preprocessing=self.contract.to_dict(),
                          weights_source={"kind": "file", "path": str(weights.resolve()), "sha256": digest})  # fmt: skip
        if self.pooling in encoder.pool_modes:  # "pre-logits" (a classifier's own) is not an encoder pooling
            encoder.default_pool = self.pooling
        return encoder

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
            raise BadInputError(
                f"the model does not reproduce its reference embeddings (max difference {diff:.3g}); "
                "the export is damaged or needs another timm/torch",
                source=str(self.path),
            )


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
    config, metadata = read_json(root / CONFIG), read_json(root / METADATA)
    if config.get("format") != EXPORT_FORMAT:
        raise BadInputError(
            f"unsupported export format {config.get('format')!r} (expected {EXPORT_FORMAT})", source=str(root / CONFIG)
        )
    found = Contract.from_dict(read_json(root / CONTRACT), source=str(root / CONTRACT))
    check_compatible(config.get("contract") or {}, found, str(root / CONTRACT))
    if contract is not None:
        check_compatible(get_contract(contract), found, f"export {root}")
    for name, digest in (metadata.get("files") or {}).items():
        path = root / name
        if not path.is_file():
            raise BadInputError(f"{name} is missing from the export", source=str(root))
        if sha256_file(path) != digest:
            raise BadInputError(
                f"{name} was changed after export (sha256 differs from metadata.json); re-export it from its run",
                source=str(root),
            )
    exported = open_export(root, config, found, metadata)
    if verify:
        exported.verify_reference()
    return exported


def open_export(root: Path, config: dict[str, Any], contract: Contract, metadata: dict[str, Any]) -> ExportedModel:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    with torch.random.fork_rng(devices=[]):  # building the architecture must not move the caller's RNG
        model = build_model(config["model"])
    try:
        model.load_state_dict(load_file(str(root / WEIGHTS)), strict=True)
    except (RuntimeError, OSError, SafetensorError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadInputError(
            f"weights do not fit {config['model'].get('name')} ({first})", source=str(root / WEIGHTS)
        ) from None
    return ExportedModel(root, model.eval(), contract, config["pooling"], config, metadata)


def package_version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInputError(f"unreadable JSON ({str(exc).splitlines()[0]})", source=str(path)) from None
    if not isinstance(data, dict):
        raise BadInputError("expected a JSON object", source=str(path))
    return data


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
