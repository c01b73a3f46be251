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
from greenfm.models.backbones import TINY_CONFIGS, Encoder, create_encoder, encoder_spec, same_architecture
from greenfm.models.export import (
    CONFIG_FILE,
    exported_tower_names,
    load_exported_heads,
    load_exported_towers,
    read_export_config,
)
from greenfm.models.mri import MRI_VARIANTS
from greenfm.models.video3d import R3D_VARIANTS
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


def image_tower(init: str, backbone: str | None, img_size: int | None, *, option: str = "--init") -> Encoder:
    """The image tower: an ``--init`` folder's (strict), else ``backbone`` with ``init`` weights."""
    folder = export_folder(init)
    if folder is None:
        name = backbone or DEFAULT_BACKBONE
        if name in R3D_VARIANTS or name in MRI_VARIANTS:  # 3-D encoders take any (D, H, W): the contract sizes the crop
            if img_size:
                raise ConfigError(f"--img-size does not apply to the 3-D encoder {name}; the contract's size sets the crop")
            return create_encoder(name, weights=init)
        # greenfm's tiny configs carry their own size (vit_tiny_test: 32 px, as finetune builds it);
        # other backbones take METHODS' 392 px
        own = TINY_CONFIGS.get(name, {}).get("img_size")
        return create_encoder(name, weights=init, img_size=img_size or own or DEFAULT_IMG_SIZE)
    encoder = load_encoder(init)
    if backbone is not None and not same_architecture(encoder_spec(backbone), encoder.spec):
        raise ConfigError(
            f"{option} {init} holds a {encoder.spec.get('name')} image tower, not --backbone {backbone}; "
            "drop --backbone to continue from it"
        )
    if img_size and encoder.img_size and encoder.img_size[-1] != img_size:
        raise ConfigError(f"{option} {init} was trained at {encoder.img_size[-1]} px but img_size is {img_size}")
    return encoder


def text_tower(init: str, source: str | None, *, pool: str | None, max_length: int | None, option: str = "--init") -> Any:
    """The text tower: the ``--init`` run's own when it has one (strict), else ``source``
    (default: the offline MiniLM package)."""
    from greenfm.models.text import DEFAULT_TEXT_TOWER, create_text_tower

    folder = export_folder(init)
    if folder is not None and "text" in exported_tower_names(folder):
        tower = load_exported_towers(folder, ["text"])["text"]
        if source is not None:
            given = create_text_tower(source, pool=pool, max_length=max_length)
            if given.tokenizer.get_vocab() != tower.tokenizer.get_vocab():
                raise ConfigError(f"--text-tower {source} has another vocabulary than {option} {init}'s text tower")
            if given.model.config.to_dict() != tower.model.config.to_dict():
                raise ConfigError(f"--text-tower {source} has another architecture than {option} {init}'s text tower")
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


# -- GreenRFM's align stage: the two stage-1 runs it starts from ---------------------------------


def align_inits(config: Any, method: Any) -> tuple[str | None, str | None, dict[str, dict[str, Any]]]:
    """(image init, text init, the stage-1 runs' records) of a greenrfm align run (METHODS 3.5).

    With ``init_from_stage1`` (default) both ``--init-image`` and ``--init-text`` are required
    and must be greenrfm runs of the image and text stage; without it the towers come from
    ``--init`` / ``--backbone`` and ``--text-tower`` as in the official release, with a warning.
    """
    if not getattr(method, "init_from_stage1", True):
        if config.init_image or config.init_text:
            raise ConfigError("--init-image / --init-text contradict init_from_stage1=false, which starts the align "
                              "stage from the unsupervised towers")  # fmt: skip
        log.warning("init_from_stage1=false reproduces the official release: the align stage starts from the "
                    "unsupervised towers (--init / --backbone, --text-tower), not from stage-1 runs (METHODS 3.5)")  # fmt: skip
        return config.init, config.init, {}
    missing = [f"--init-{n}" for n in ("image", "text") if not getattr(config, f"init_{n}")]
    if missing:
        raise ConfigError(f"stage align starts from the stage-1 runs: pass {' and '.join(missing)} (runs of --stage "
                          "image and --stage text), or set init_from_stage1=false to start from unsupervised towers")  # fmt: skip
    if config.init not in (None, "random"):
        raise ConfigError("--init does not apply to stage align: its towers come from --init-image and --init-text")
    stage1 = {name: stage1_run(getattr(config, f"init_{name}"), name) for name in ("image", "text")}
    return config.init_image, config.init_text, stage1


def stage1_run(path: str, stage: str) -> dict[str, Any]:
    """The record of a greenrfm stage-1 run (or its export); anything else is a one-line error."""
    option = f"--init-{stage}"
    folder = export_folder(path)
    if folder is None:
        raise ConfigError(f"{option} {path}: not a folder (a greenrfm --stage {stage} run or its exported/)")
    config = read_export_config(folder)
    meta = config.get("metadata") or {}
    recipe, ran = meta.get("recipe"), meta.get("stage")
    if recipe != "greenrfm" or ran != stage:
        what = f"a {recipe or 'non-greenfm'} run" + (f" of stage {ran}" if ran else "")
        raise ConfigError(f"{option} {path} is {what}, not a greenrfm --stage {stage} run")
    return {"source": str(path), "meta": meta, "preprocessing": config.get("preprocessing")}


def check_stage1_findings(stage1: dict[str, dict[str, Any]], findings: list[str]) -> None:
    """Both stage-1 runs were trained on this manifest's label vocabulary (the finding columns)."""
    for name, run in stage1.items():
        theirs = list(run["meta"].get("findings") or [])
        if set(theirs) != set(findings):
            extra, lacking = sorted(set(theirs) - set(findings)), sorted(set(findings) - set(theirs))
            raise ConfigError(
                f"--init-{name} {run['source']} was trained on another label vocabulary ({len(theirs)} findings) than "
                f"this manifest's {len(findings)}: only there {extra[:4]}, only here {lacking[:4]}"
            )


def check_stage1_contract(stage1: dict[str, dict[str, Any]], contract: Any) -> None:
    """The align run preprocesses images as the stage-1 image run did."""
    theirs = stage1["image"].get("preprocessing")
    if not theirs:
        return
    ours = {k: v for k, v in contract.to_dict().items() if k != "source_size"}
    theirs = {k: v for k, v in theirs.items() if k != "source_size"}
    if ours != theirs:
        differ = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
        raise ConfigError(f"--contract differs from --init-image {stage1['image']['source']}'s preprocessing "
                          f"contract in {differ}; drop --contract to keep the stage-1 one")  # fmt: skip
