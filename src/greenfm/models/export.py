"""Exported encoders: ``model.safetensors`` + ``config.json``, loadable without greenfm.

``config.json`` holds the model ``spec`` (library, name, kwargs) and the
preprocessing contract, so that for a timm encoder::

    cfg = json.load(open("exported/config.json"))["model"]
    model = timm.create_model(cfg["name"], pretrained=False, **cfg["kwargs"])
    model.load_state_dict(safetensors.torch.load_file("exported/model.safetensors"))

reproduces the exported network exactly.

One layout serves a run's ``exported/`` folder (``greenfm.export/1``) and a ``greenfm export``
model folder (``greenfm.model/1``): ``model.safetensors`` + ``config.json`` (the image tower),
``text/`` (a text tower) and ``heads.safetensors`` (projections, temperature), listed in
``config.json`` under ``towers`` and ``heads``. A model folder adds ``contract.json``,
``metadata.json`` (the sha256 of every file), reference embeddings and a card. The loaders here
read both; in a model folder they first check the sha256 of every file they read
(:func:`verify_model_folder`). ``greenfm.export.load_exported`` checks the whole folder,
the contract and the reference embeddings too.
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
from greenfm.io_safety import atomic_output, plain_file_mode, write_bytes_atomic
from greenfm.models.backbones import Encoder, build_model
from greenfm.models.weights import file_sha256

EXPORT_FORMAT = "greenfm.export/1"
MODEL_FOLDER_FORMAT = "greenfm.model/1"  # greenfm.export.EXPORT_FORMAT: a checked model folder with a card
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
METADATA_FILE = "metadata.json"  # a model folder's record, with the sha256 of every file


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
    with atomic_output(out_dir / WEIGHTS_FILE, needed=sum(v.nbytes for v in state.values())) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})  # a full disk: one line, the old export intact
        plain_file_mode(tmp)  # safetensors writes 0600
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
    write_bytes_atomic(out_dir / CONFIG_FILE, json.dumps(config, indent=2, sort_keys=False).encode())
    return out_dir


def read_export_config(path: str | Path) -> dict[str, Any]:
    """``config.json`` of a run's export folder, with a one-line error when it is not one."""
    path = Path(path)
    config_path, weights_path = path / CONFIG_FILE, path / WEIGHTS_FILE
    if not config_path.is_file() or not weights_path.is_file():
        raise BadInputError(f"not a greenfm export (needs {CONFIG_FILE} and {WEIGHTS_FILE})", source=str(path))
    try:
        config = json.loads(config_path.read_text())
        if not isinstance(config, dict):
            raise TypeError("not a JSON object")
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
        raise BadInputError(f"unreadable export config ({exc})", source=str(config_path)) from None
    return config


def is_model_folder(path: str | Path) -> bool:
    """True for a ``greenfm export`` model folder (checked format with a card; ``greenfm.export``)."""
    config_path = Path(path) / CONFIG_FILE
    try:
        return json.loads(config_path.read_text()).get("format") == MODEL_FOLDER_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def load_exported_encoder(path: str | Path) -> Encoder:
    """The image :class:`Encoder` of a run's export folder (written by :func:`export_encoder`
    or :func:`export_towers`), weights loaded strictly, contract attached.

    ``greenfm export`` model folders are loaded by ``greenfm.export.load_exported``, which
    checks hashes and reference embeddings first (``workflows.inputs.load_encoder`` picks).
    """
    path = Path(path)
    config = read_export_config(path)
    if config.get("format") == MODEL_FOLDER_FORMAT:
        raise BadInputError("a greenfm model folder: load it with greenfm.export.load_exported", source=str(path))
    return _image_encoder(path, config)


def _image_encoder(path: Path, config: dict[str, Any], sha256: str | None = None) -> Encoder:
    """The image tower of an export folder of either format (hashes, if any, already checked)."""
    weights_path = path / WEIGHTS_FILE
    try:
        spec = config["model"]
        model = build_model(spec)
    except (KeyError, TypeError) as exc:
        raise BadInputError(f"export config names no model ({exc})", source=str(path / CONFIG_FILE)) from None
    try:
        model.load_state_dict(load_file(str(weights_path)), strict=True)
    except (RuntimeError, OSError, SafetensorError) as exc:
        raise BadInputError(f"weights do not match the config's model ({str(exc).splitlines()[0]})",
                            source=str(weights_path)) from None
    source = {"kind": "file", "path": str(weights_path.resolve()), "sha256": sha256 or file_sha256(weights_path)}
    encoder = Encoder(model, spec, weights_source=source, preprocessing=config.get("preprocessing"))
    if config.get("format") == MODEL_FOLDER_FORMAT and config.get("pooling") in encoder.pool_modes:
        encoder.default_pool = config["pooling"]  # a model folder embeds with the pooling it was exported with
    return encoder


def verify_model_folder(path: str | Path, parts: list[str] | None = None) -> dict[str, str]:
    """Check a model folder's files against the sha256 its ``metadata.json`` records; returns them.

    ``parts`` names the files or tower folders to check (default: every recorded file). A
    recorded file that is missing or changed, a checked file without a record, or a file
    added to a tower folder after export is refused with one line.
    """
    root = Path(path)
    try:
        files = json.loads((root / METADATA_FILE).read_text())["files"]
        if not isinstance(files, dict):
            raise TypeError("'files' is not a JSON object")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadInputError(f"not a checkable greenfm model folder ({METADATA_FILE}: {exc})",
                            source=str(root)) from None  # fmt: skip
    if parts is None:
        wanted, folders = list(files), sorted({n.split("/")[0] for n in files if "/" in n})
    else:
        def inside(name: str, part: str) -> bool:
            return name == part or name.startswith(part.rstrip("/") + "/")

        wanted = [n for n in files if any(inside(n, p) for p in parts)]
        for part in parts:
            if not any(inside(n, part) for n in wanted):
                raise BadInputError(f"{part} has no sha256 in {METADATA_FILE}; re-export it from its run",
                                    source=str(root))  # fmt: skip
        folders = [p for p in parts if (root / p).is_dir()]
    for folder in folders:  # a file added to a tower folder (another tokenizer file) would change the tower
        for file in sorted((root / folder).rglob("*")):
            name = file.relative_to(root).as_posix()
            if file.is_file() and name not in files:
                raise BadInputError(
                    f"{name} was added after export (not in {METADATA_FILE}); re-export it from its run",
                    source=str(root),
                )
    for name in wanted:
        file = root / name
        if not file.is_file():
            raise BadInputError(f"{name} is missing from the export", source=str(root))
        if file_sha256(file) != files[name]:
            raise BadInputError(
                f"{name} was changed after export (sha256 differs from {METADATA_FILE}); re-export it from its run",
                source=str(root),
            )
    return {name: files[name] for name in wanted}


# -- several towers --------------------------------------------------------------------------

TEXT_FOLDER = "text"
HEADS_FILE = "heads.safetensors"


def export_towers(
    towers: dict[str, Any],
    out_dir: str | Path,
    *,
    heads: dict[str, Any] | None = None,
    preprocessing: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """One export folder for every recipe: the image tower as :func:`export_encoder` writes it
    (plain timm loads it), a text tower in ``text/`` (transformers ``save_pretrained`` plus its
    tokenizer), and recipe tensors (projections, temperature) in ``heads.safetensors``.
    ``config.json`` lists them under ``towers`` and ``heads``."""
    out_dir = Path(out_dir)
    image = towers.get("image")
    if image is None:
        raise BadInputError("an export needs an image tower", source=str(out_dir))
    export_encoder(image, out_dir, preprocessing=preprocessing, metadata=metadata)
    listing: dict[str, Any] = {"image": {"path": ".", "kind": "image"}}
    for name, tower in towers.items():
        if name == "image":
            continue
        folder = out_dir / (TEXT_FOLDER if name == "text" else name)
        tower.save(folder)
        listing[name] = {"path": folder.name, "kind": "text", "spec": tower.spec}
    head_info: dict[str, list[int]] = {}
    if heads:
        state = {k: v.detach().to("cpu").contiguous() for k, v in heads.items()}
        with atomic_output(out_dir / HEADS_FILE, needed=sum(v.nbytes for v in state.values())) as tmp:
            save_file(state, str(tmp), metadata={"format": "pt"})
            plain_file_mode(tmp)
        head_info = {k: list(v.shape) for k, v in state.items()}
    config_path = out_dir / CONFIG_FILE
    config = json.loads(config_path.read_text())
    config.update(towers=listing, heads=head_info)
    write_bytes_atomic(config_path, json.dumps(config, indent=2, sort_keys=False).encode())
    return out_dir


def exported_tower_names(path: str | Path) -> list[str]:
    """The towers an export folder holds (``["image"]`` for single-tower exports)."""
    return list((read_export_config(path).get("towers") or {"image": {}}).keys())


def load_exported_towers(path: str | Path, names: list[str] | None = None) -> dict[str, Any]:
    """Named towers of an export folder, each loaded strictly; unknown names are one-line errors."""
    path = Path(path)
    config = read_export_config(path)
    listing = config.get("towers") or {"image": {"path": ".", "kind": "image"}}
    wanted = names if names is not None else list(listing)
    missing = [n for n in wanted if n not in listing]
    if missing:
        raise BadInputError(f"export has no tower(s) {missing}; it holds {sorted(listing)}", source=str(path))
    model_folder = config.get("format") == MODEL_FOLDER_FORMAT
    out: dict[str, Any] = {}
    for name in wanted:
        if name == "image":
            digest = verify_model_folder(path, [WEIGHTS_FILE])[WEIGHTS_FILE] if model_folder else None
            out[name] = _image_encoder(path, config, digest)
        else:
            from greenfm.models.text import create_text_tower

            folder = tower_folder(path, listing[name])
            if model_folder:
                verify_model_folder(path, [folder.name])
            out[name] = create_text_tower(str(folder))
    return out


def tower_folder(path: str | Path, entry: dict[str, Any]) -> Path:
    """The folder of a non-image tower listed in ``config.json``: a plain name inside the export."""
    name = entry.get("path") if isinstance(entry, dict) else None
    if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name:
        raise BadInputError(f"export config lists a tower at {name!r}, not a folder inside the export",
                            source=str(Path(path) / CONFIG_FILE))  # fmt: skip
    return Path(path) / name


def load_exported_heads(path: str | Path) -> dict[str, Any]:
    """The recipe tensors saved beside the towers (empty when there are none)."""
    file = Path(path) / HEADS_FILE
    if is_model_folder(path) and (file.is_file() or (read_export_config(path).get("heads") or {})):
        verify_model_folder(path, [HEADS_FILE])
    if not file.is_file():
        return {}
    try:
        return load_file(str(file))
    except (OSError, SafetensorError) as exc:
        raise BadInputError(f"unreadable heads ({str(exc).splitlines()[0]})", source=str(file)) from None
