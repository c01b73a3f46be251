"""Towers for a recipe, from the options a user gives: ``--backbone``/``--init``/``--img-size``
for the image tower, ``--text-tower`` for the text tower.

``--init`` may name an earlier greenfm run (or its export): the towers it holds are
loaded *strictly* (the next stage starts from exactly those weights), and an explicit
option that contradicts them (another architecture, another text vocabulary) is a
one-line error rather than a silent swap. Towers the run does not hold are built fresh.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from greenfm.errors import ConfigError
from greenfm.models.backbones import Encoder, create_encoder, encoder_spec, same_architecture
from greenfm.models.export import (
    CONFIG_FILE,
    exported_tower_names,
    load_exported_heads,
    load_exported_towers,
)
from greenfm.workflows.inputs import load_encoder

log = logging.getLogger(__name__)

DEFAULT_BACKBONE = "vit_small_patch14_reg4_dinov2"
DEFAULT_IMG_SIZE = 392  # METHODS 2: ViT-S/14 at 392 px


def export_folder(init: str | Path) -> Path | None:
    """The export folder behind ``--init`` (a run folder's ``exported/`` or the folder itself); None if not a folder."""
    path = Path(str(init)).expanduser()
    if not path.is_dir():
        return None
    for folder in (path / "exported", path):
        if (folder / CONFIG_FILE).is_file():
            return folder
    return path  # load_encoder names what is missing


def image_tower(init: str, backbone: str | None, img_size: int | None) -> Encoder:
    """The image tower: an ``--init`` folder's (strict), else ``backbone`` with ``init`` weights."""
    folder = export_folder(init)
    if folder is None:
        return create_encoder(backbone or DEFAULT_BACKBONE, weights=init, img_size=img_size or DEFAULT_IMG_SIZE)
    encoder = load_encoder(init)
    if backbone is not None and not same_architecture(encoder_spec(backbone), encoder.spec):
        raise ConfigError(
            f"--init {init} holds a {encoder.spec.get('name')} image tower, not --backbone {backbone}; "
            "drop --backbone to continue from it"
        )
    if img_size and encoder.img_size and encoder.img_size[-1] != img_size:
        raise ConfigError(f"--init {init} was trained at {encoder.img_size[-1]} px but img_size is {img_size}")
    return encoder


def text_tower(init: str, source: str | None, *, pool: str | None, max_length: int | None) -> Any:
    """The text tower: the ``--init`` run's own when it has one (strict), else ``source``
    (default: the offline MiniLM package)."""
    from greenfm.models.text import DEFAULT_TEXT_TOWER, create_text_tower

    folder = export_folder(init)
    if folder is not None and "text" in exported_tower_names(folder):
        tower = load_exported_towers(folder, ["text"])["text"]
        if source is not None:
            given = create_text_tower(source, pool=pool, max_length=max_length)
            if given.tokenizer.get_vocab() != tower.tokenizer.get_vocab():
                raise ConfigError(f"--text-tower {source} has another vocabulary than --init {init}'s text tower")
            if given.model.config.to_dict() != tower.model.config.to_dict():
                raise ConfigError(f"--text-tower {source} has another architecture than --init {init}'s text tower")
        if pool is not None:
            tower.pool = pool
        if max_length is not None:
            tower.max_length = max_length
        log.info("text tower: from %s", folder)
        return tower
    return create_text_tower(source or DEFAULT_TEXT_TOWER, pool=pool, max_length=max_length)


def init_heads(init: str) -> dict[str, Any]:
    """Recipe tensors (projections, temperature) saved by an earlier run, if ``--init`` is one."""
    folder = export_folder(init)
    if folder is None:
        return {}
    return load_exported_heads(folder)
