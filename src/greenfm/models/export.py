"""Exported encoders: ``model.safetensors`` + ``config.json``, loadable without greenfm.

``config.json`` holds the model ``spec`` (library, name, kwargs) and the
preprocessing contract, so that for a timm encoder::

    cfg = json.load(open("exported/config.json"))["model"]
    model = timm.create_model(cfg["name"], pretrained=False, **cfg["kwargs"])
    model.load_state_dict(safetensors.torch.load_file("exported/model.safetensors"))

reproduces the exported network exactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import greenfm
from greenfm.data.contract import Contract
from greenfm.errors import BadInputError
from greenfm.models.backbones import Encoder, build_model
from greenfm.models.weights import file_sha256

EXPORT_FORMAT = "greenfm.export/1"
MODEL_FOLDER_FORMAT = "greenfm.model/1"  # greenfm.export.EXPORT_FORMAT: a checked model folder with a card
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def default_preprocessing(img_size: int | tuple[int, int], in_chans: int = 3) -> dict[str, Any]:
    """Resize((S, S), antialias) -> [0, 1] -> Normalize(0.5, 0.5), as a ``Contract`` dict (RETFound-Green's)."""
    size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    return Contract(size=size, channels=in_chans, mean=0.5, std=0.5, resize="squash", antialias=True).to_dict()


def export_encoder(
    encoder: Encoder,
    out_dir: str | Path,
    *,
    preprocessing: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``encoder.model`` to ``out_dir/model.safetensors`` and its recipe to ``out_dir/config.json``.

    ``preprocessing`` (a ``Contract`` or its dict) defaults to the encoder's own
    contract, else to :func:`default_preprocessing` at the ViT's image size.
    Returns ``out_dir``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if preprocessing is None:
        preprocessing = encoder.preprocessing
    in_chans = encoder.spec["kwargs"].get("in_chans", 3)
    if preprocessing is None and encoder.img_size is not None and in_chans in (1, 3):
        preprocessing = default_preprocessing(tuple(encoder.img_size), in_chans)
    if hasattr(preprocessing, "to_dict"):  # a data.contract.Contract
        preprocessing = preprocessing.to_dict()
    state = {k: v.detach().to("cpu").contiguous() for k, v in encoder.model.state_dict().items()}
    save_file(state, str(out_dir / WEIGHTS_FILE), metadata={"format": "pt"})
    config = {
        "format": EXPORT_FORMAT,
        "greenfm_version": greenfm.__version__,
        "model": encoder.spec,
        "embed_dim": encoder.embed_dim,
        "num_prefix_tokens": encoder.num_prefix_tokens,
        "default_pool": encoder.default_pool,
        "preprocessing": preprocessing,
        "init_weights": encoder.weights_source,
        "metadata": metadata or {},
    }
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=False))
    return out_dir


def load_exported_encoder(path: str | Path) -> Encoder:
    """The :class:`Encoder` of either kind of greenfm export folder, its contract attached.

    - a run's ``exported/`` (this module's format, written by :func:`export_encoder`):
      strict load of the weights;
    - a ``greenfm export`` model folder (``greenfm.model/1``): loaded through
      ``greenfm.export.load_exported``, which first checks file hashes, the contract and
      the reference embeddings.
    """
    path = Path(path)
    config_path, weights_path = path / CONFIG_FILE, path / WEIGHTS_FILE
    if not config_path.is_file() or not weights_path.is_file():
        raise BadInputError(f"not a greenfm export (needs {CONFIG_FILE} and {WEIGHTS_FILE})", source=str(path))
    try:
        config = json.loads(config_path.read_text())
        model_folder = config.get("format") == MODEL_FOLDER_FORMAT
        spec = None if model_folder else config["model"]
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise BadInputError(f"unreadable export config ({exc})", source=str(config_path)) from None
    if model_folder:
        from greenfm.export.loader import load_exported

        return load_exported(path).encoder
    model = build_model(spec)
    try:
        model.load_state_dict(load_file(str(weights_path)), strict=True)
    except (RuntimeError, OSError, SafetensorError) as exc:
        raise BadInputError(f"weights do not match the config's model ({str(exc).splitlines()[0]})",
                            source=str(weights_path)) from None
    source = {"kind": "file", "path": str(weights_path.resolve()), "sha256": file_sha256(weights_path)}
    return Encoder(model, spec, weights_source=source, preprocessing=config.get("preprocessing"))
