"""``greenfm pretrain``: train a registered recipe and export its towers.

The workflow is recipe-agnostic: the recipe class (``greenfm.methods.registry``) says
which towers it needs, which batch keys (image, report, labels) and how to collate
them; this module only builds those towers from the options, builds the dataset
with the keys asked for, calls the engine and exports what the recipe exports. The
run folder follows the engine's contract (config.yaml, metrics.jsonl, train.log,
checkpoints/, compute.json) plus ``exported/`` (``greenfm.models.export.export_towers``:
the image tower loads into plain timm, a text tower and its tokenizer sit in
``exported/text/``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from greenfm.config import build_config
from greenfm.data.augment import get_augment, with_source_size
from greenfm.data.cache import default_cache_root
from greenfm.data.manifest import Manifest
from greenfm.engine import TrainConfig, fit, write_run_config
from greenfm.engine.lock import run_lock
from greenfm.engine.optim import fit_schedule_to_run
from greenfm.engine.run_dir import RunDir, is_rank_zero, read_run_config
from greenfm.errors import ConfigError
from greenfm.methods.registry import get_method
from greenfm.models.export import export_towers
from greenfm.workflows.inputs import encoder_contract, image_dataset, load_checked_manifest
from greenfm.workflows.pretrain_config import PretrainConfig
from greenfm.workflows.towers import image_tower, init_heads, text_tower

log = logging.getLogger(__name__)


def run_pretrain(config: PretrainConfig, out: str | Path, *, resume: bool = False):
    """Train the recipe, then export its towers; returns the engine's ``FitResult``."""
    import torch

    out = Path(out)
    recipe_cls = get_method(config.recipe)
    recipe_train = recipe_cls.default_train_config(**config.method)
    train_config = build_config(TrainConfig, **fit_schedule_to_run(recipe_train, config.train))  # --epochs rescales
    method_config = build_config(recipe_cls.Config, **config.method)  # validated before any work starts
    manifest = _training_rows(config)

    if config.init is None:  # the recipe's recommended start, recorded in the run's config
        config = config.model_copy(update={"init": recipe_cls.recommended_init(config.backbone)})
    torch.manual_seed(train_config.seed)  # a random init follows --seed
    towers: dict[str, Any] = {"image": image_tower(config.init, config.backbone, config.img_size)}
    encoder = towers["image"]
    if "text" in recipe_cls.towers.values():
        towers["text"] = text_tower(config.init, config.text_tower, pool=config.text_pool,
                                    max_length=config.text_max_length)  # fmt: skip
    contract = encoder_contract(encoder, config.contract, modality=config.modality, data=manifest)
    augment_name = config.augment if config.augment != "auto" else _auto_augment(contract.modality)
    contract = with_source_size(contract, augment_name, config.source_size)  # augment above img_size, resize last
    wants = set(recipe_cls.batch_keys)
    dataset = image_dataset(
        manifest, contract, cache_root=config.cache or default_cache_root(), augment=get_augment(augment_name, contract),
        skip_bad=config.skip_bad, labels="labels" in wants,
    )  # fmt: skip
    findings = list(dataset.findings)
    text_record: dict[str, Any] = {}
    if "report" in wants:
        dataset, text_record = _with_reports(dataset, config, towers["text"])
    recipe = recipe_cls.from_towers(towers, method_config, findings=findings, heads=init_heads(config.init))
    record = {
        "recipe": config.recipe,
        "backbone": encoder.spec.get("name"),
        "towers": {name: getattr(t, "spec", {}) for name, t in towers.items()},
        "init_weights": encoder.weights_source,
        "contract": contract.replace(source_size=None).to_dict(),  # the model's input contract
        "augment": augment_name,
        "source_size": list(contract.source_size) if contract.source_size else None,  # where augmentation ran
        "images": len(dataset),
        "patients": int(manifest.table["patient_id"].nunique()),
        "findings": findings if recipe_cls.needs_labels else [],
        "manifest_hash": manifest.hash,
        "flags": recipe.flags,
        **text_record,
    }
    with run_lock(out, enabled=is_rank_zero()):  # one writer per run folder, from config.yaml to the export
        if not resume and RunDir(out).last.is_file():  # before config.yaml is rewritten
            raise ConfigError(f"{out} already holds a run; resume it (--resume) or choose another folder")
        if not resume:
            write_run_config(
                out, {"pretrain": config.to_dict(), "train": train_config.to_dict(), "record": record},
                manifest_hash=manifest.hash, seed=train_config.seed,
            )  # fmt: skip
        result = fit(recipe, dataset, train_config, out, resume=resume, run_record=record, export=False)
        export_towers(recipe.export_towers(), RunDir(out).exported, heads=recipe.export_heads(),
                      preprocessing=contract.replace(source_size=None), metadata=record)  # fmt: skip
    return result


def _training_rows(config: PretrainConfig) -> Manifest:
    manifest = load_checked_manifest(config.data, skip_bad=config.skip_bad)
    if manifest.has_splits:
        manifest = manifest.subset(manifest.table["split"].isin(config.splits))
        if len(manifest) == 0:
            raise ConfigError(f"{config.data}: no rows in split(s) {config.splits} to pretrain on")
    return manifest


def _with_reports(dataset, config: PretrainConfig, tower) -> tuple[Any, dict[str, Any]]:
    """The dataset with each row's report (template reports where asked), and what to record."""
    from greenfm.data.reports import WithReports, fill_missing_reports, manifest_reports, report_column, require_texts

    manifest = dataset.manifest
    record: dict[str, Any] = {}
    if config.text_from_labels:
        from greenfm.labeling.templates import synthesize_reports

        vocab = config.vocab or _covering_vocabulary(manifest.findings)
        templates = synthesize_reports(manifest.table, vocab)
        reports, filled = fill_missing_reports(report_column(manifest), templates)
        reports = require_texts(manifest, reports)
        record["template_reports"] = {"vocabulary": vocab, "rows": filled}
        log.info("template reports from the labels for %d of %d rows (vocabulary %s)", filled, len(reports), vocab)
    else:
        reports = manifest_reports(manifest, what=f"recipe '{config.recipe}'")
    from greenfm.models.text import count_truncated

    truncated = count_truncated(tower, reports)
    if truncated:
        log.warning(
            "%d of %d reports are longer than the text tower's %d tokens and will be truncated",
            truncated, len(reports), tower.max_length,
        )  # fmt: skip
    record["reports"] = {"rows": len(reports), "truncated": truncated, "max_length": tower.max_length}
    return WithReports(dataset, reports), record


def _covering_vocabulary(findings: list[str]) -> str:
    from greenfm.labeling.findings import builtin_vocabularies, load_vocabulary

    best, overlap = None, 0
    for name in builtin_vocabularies():
        common = len(set(load_vocabulary(name).ids) & set(findings))
        if common > overlap:
            best, overlap = name, common
    if best is None:
        raise ConfigError("--text-from-labels: no built-in vocabulary covers the finding columns; pass --vocab FILE")
    return best


def load_run_pretrain_config(run_dir: str | Path) -> PretrainConfig:
    """The ``PretrainConfig`` a run folder was started with (for ``--resume``)."""
    saved = read_run_config(run_dir, "pretrain", "pretraining")
    return PretrainConfig(**{**saved["pretrain"], "train": {**saved["pretrain"].get("train", {}), **saved.get("train", {})}})


def _auto_augment(modality: str) -> str:
    return {"fundus": "rfg", "photo": "rfg"}.get(modality, "cxr" if modality == "xray" else "none")
