"""Reading an export back: ``load_exported`` checks it, ``ExportedModel`` embeds with it.

See ``greenfm.export`` for the folder layout. Loading refuses, with one line, an
export whose files changed after export, whose contract disagrees with its config
or with the caller's pipeline, or that no longer reproduces its reference embeddings
(the image embedding; for an image-text model also the text embedding of
``REFERENCE_TEXT`` and both projected latents).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from greenfm.data.contract import Contract, check_compatible, get_contract, normalize
from greenfm.errors import BadInputError, ConfigError
from greenfm.models.backbones import Encoder, build_model
from greenfm.models.export import (
    CONFIG_FILE,
    HEADS_FILE,
    METADATA_FILE,
    MODEL_FOLDER_FORMAT,
    WEIGHTS_FILE,
    tower_folder,
    verify_model_folder,
)
from greenfm.models.weights import file_sha256 as sha256_file

if TYPE_CHECKING:
    from greenfm.models.image_text import ImageTextModel

EXPORT_FORMAT = MODEL_FOLDER_FORMAT  # "greenfm.model/1"; a run's exported/ is "greenfm.export/1"
# The file names of a run's exported/ folder, so that a model folder is that layout plus checks and a card.
WEIGHTS, CONFIG, HEADS, METADATA = WEIGHTS_FILE, CONFIG_FILE, HEADS_FILE, METADATA_FILE
CONTRACT, CARD = "contract.json", "MODEL_CARD.md"
REFERENCE_NPY, REFERENCE_JSON = "reference_embeddings.npy", "reference_embeddings.json"
# Image-text models: the text tower's pooled embedding of REFERENCE_TEXT, and the projected
# latents of the fixture image (row 0) and of REFERENCE_TEXT (row 1).
REFERENCE_TEXT_NPY, REFERENCE_LATENTS_NPY = "reference_text_embeddings.npy", "reference_latents.npy"
REFERENCE_TEXT = "Small left pleural effusion. No pneumothorax."
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
    text: nn.Module | None = None  # the text tower (``greenfm.models.text.TextTower``) of an image-text model
    heads: dict[str, torch.Tensor] = field(default_factory=dict)  # projections, temperature

    @property
    def towers(self) -> dict[str, nn.Module]:
        """Every tower by name: ``image`` (the ``Encoder``) and, for an image-text model, ``text``."""
        return {"image": self.encoder, **({"text": self.text} if self.text is not None else {})}

    @cached_property
    def image_text(self) -> ImageTextModel:
        """The image-text model (``greenfm.models.image_text.ImageTextModel``): latents, zero-shot."""
        from greenfm.models.image_text import ImageTextModel

        if self.text is None:
            raise BadInputError("not an image-text model (no text tower)", source=str(self.path))
        with torch.random.fork_rng(devices=[]):  # building the projections must not move the caller's RNG
            return ImageTextModel.from_towers(self.encoder, self.text, self.heads, self.config)

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

    def reference_outputs(self) -> dict[str, torch.Tensor]:
        """What the reference files hold, computed now: file name -> (rows, D) float32 on the CPU."""
        x = self.fixture_input()
        out = {REFERENCE_NPY: self.embed(x).cpu().float()}
        if self.text is not None:
            out[REFERENCE_TEXT_NPY] = self.text.encode([self.reference_text])
            model = self.image_text
            out[REFERENCE_LATENTS_NPY] = torch.cat([model.encode_images(x), model.encode_texts([self.reference_text])])
        return out

    @property
    def reference_text(self) -> str:
        return (self.config.get("fixture") or {}).get("text") or REFERENCE_TEXT

    def verify_reference(self) -> None:
        """Refuse (``GreenfmError``) an export that no longer reproduces its reference embeddings."""
        what = {REFERENCE_NPY: "the model does not reproduce its reference embeddings",
                REFERENCE_TEXT_NPY: "the text tower does not reproduce its reference embeddings",
                REFERENCE_LATENTS_NPY: "the image-text model does not reproduce its reference latents"}  # fmt: skip
        for name, now in self.reference_outputs().items():
            stored = torch.from_numpy(np.load(self.path / name))
            if stored.shape != now.shape or not torch.allclose(now, stored, rtol=REFERENCE_RTOL, atol=REFERENCE_ATOL):
                diff = (now - stored).abs().max().item() if stored.shape == now.shape else float("nan")
                raise BadInputError(
                    f"{what[name]} (max difference {diff:.3g}); the export is damaged or needs another "
                    "timm/transformers/torch",
                    source=str(self.path),
                )


# -- loading --------------------------------------------------------------------------------


def load_exported(
    model_dir: str | Path, *, contract: str | Path | Contract | None = None, verify: bool = True
) -> ExportedModel:
    """Load an export, refusing (one-line ``GreenfmError``) anything tampered with or mismatched.

    Checks, in order: the files are there; ``contract.json`` agrees with ``config.json``;
    ``contract`` (the pipeline's own, when given) agrees with the export's; every checked
    file (the text tower's and ``heads.safetensors`` too) has the sha256 recorded in
    ``metadata.json`` and no file was added to a tower folder; the weights fit the
    architecture; and (``verify``) the fixture image (and, for an image-text model, the
    reference sentence) still gives the reference embeddings and latents.
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
    verify_model_folder(root)
    recorded = metadata.get("files") or {}
    parts = [tower_folder(root, e).name for n, e in (config.get("towers") or {}).items() if n != "image"]
    for part in [WEIGHTS, *parts, *([HEADS] if config.get("heads") else [])]:  # what the model is made of
        if not any(f == part or f.startswith(part + "/") for f in recorded):
            raise BadInputError(f"{part} has no sha256 in {METADATA}; re-export it from its run", source=str(root))
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
    text, heads = None, {}
    for name, entry in (config.get("towers") or {}).items():
        if name == "text":
            from greenfm.models.text import create_text_tower

            text = create_text_tower(str(tower_folder(root, entry))).eval()
        elif name != "image":
            raise BadInputError(f"unsupported tower {name!r} (greenfm knows image and text)", source=str(root / CONFIG))
    if config.get("heads"):
        try:
            heads = load_file(str(root / HEADS))
        except (OSError, SafetensorError) as exc:
            raise BadInputError(f"unreadable heads ({str(exc).splitlines()[0]})", source=str(root / HEADS)) from None
    return ExportedModel(root, model.eval(), contract, config["pooling"], config, metadata, text, heads)


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
