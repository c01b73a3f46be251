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
from dataclasses import dataclass
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
from greenfm.models.mri import MRI_TEXT_MAX_LENGTH, is_three_plane_spec
from greenfm.workflows.inputs import encoder_contract, image_dataset, load_checked_manifest
from greenfm.workflows.pretrain_config import PretrainConfig
from greenfm.workflows.towers import (
    align_inits,
    check_stage1_contract,
    check_stage1_findings,
    image_tower,
    init_heads,
    text_tower,
)

log = logging.getLogger(__name__)


def run_pretrain(config: PretrainConfig, out: str | Path, *, resume: bool = False):
    """Train the recipe, then export its towers; returns the engine's ``FitResult``
    (a :class:`StagedResult` for a staged recipe's ``--stage all``)."""
    recipe_cls = get_method(config.recipe)
    stage = _stage(recipe_cls, config)
    if stage == "all":
        return _run_all_stages(recipe_cls, config, Path(out), resume=resume)
    return _run_stage(recipe_cls, config, Path(out), stage, resume=resume)


def _run_stage(recipe_cls, config: PretrainConfig, out: Path, stage: str | None, *, resume: bool):
    """One run: one recipe, or one stage of a staged recipe."""
    import torch

    recipe_train = recipe_cls.default_train_config(**({"stage": stage} if stage else {}), **config.method)
    train_config = build_config(TrainConfig, **fit_schedule_to_run(recipe_train, config.train))  # --epochs rescales
    method_config = build_config(recipe_cls.Config, **config.method)  # validated before any work starts
    kinds = recipe_cls.stage_towers(stage) if stage else tuple(recipe_cls.towers.values())
    wants = set(recipe_cls.stage_batch_keys(stage) if stage else recipe_cls.batch_keys)
    image_init = text_init = config.init
    stage1: dict[str, Any] = {}
    if stage == "align":
        image_init, text_init, stage1 = align_inits(config, method_config)
    manifest = _training_rows(config)

    if config.init is None:  # the recipe's recommended start, recorded in the run's config
        config = config.model_copy(update={"init": recipe_cls.recommended_init(config.backbone)})
    image_init = image_init or config.init
    text_init = text_init or config.init
    torch.manual_seed(train_config.seed)  # a random init follows --seed
    towers: dict[str, Any] = {"image": image_tower(image_init, config.backbone, config.img_size,
                                                   option="--init-image" if stage1 else "--init")}  # fmt: skip
    encoder = towers["image"]
    if "text" in kinds:
        max_length = config.text_max_length
        if max_length is None and is_three_plane_spec(encoder.spec):  # MRI reports run longer (METHODS 3.6)
            max_length = MRI_TEXT_MAX_LENGTH
        towers["text"] = text_tower(text_init, config.text_tower, pool=config.text_pool,
                                    max_length=max_length, option="--init-text" if stage1 else "--init")  # fmt: skip
    if stage:  # a staged recipe's defaults may depend on the image tower (greenrfm: the MRI encoder's align)
        recipe_train = recipe_cls.default_train_config(stage=stage, image_spec=encoder.spec, **config.method)
        train_config = build_config(TrainConfig, **fit_schedule_to_run(recipe_train, config.train))
    contract = encoder_contract(encoder, config.contract, modality=config.modality, data=manifest)
    if stage1:
        check_stage1_contract(stage1, contract)
    augment_name = config.augment if config.augment != "auto" else _auto_augment(contract.modality)
    contract = with_source_size(contract, augment_name, config.source_size)  # augment above img_size, resize last
    if "image" in wants:
        dataset = image_dataset(
            manifest, contract, cache_root=config.cache or default_cache_root(),
            augment=get_augment(augment_name, contract), skip_bad=config.skip_bad, labels="labels" in wants, train=True,
        )  # fmt: skip
    else:  # a text-only stage reads no image
        dataset = _LabelRows(manifest)
    findings = list(dataset.findings)
    if stage1:
        check_stage1_findings(stage1, findings)
    text_record: dict[str, Any] = {}
    if "report" in wants:
        what = f"recipe '{config.recipe}'" + (f" stage {stage}" if stage else "")
        dataset, text_record = _with_reports(dataset, config, towers["text"], what=what)
    recipe = recipe_cls.from_towers(towers, method_config, findings=findings, heads=init_heads(config.init), stage=stage)
    record = {
        "recipe": config.recipe,
        **({"stage": stage} if stage else {}),
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
        **({"label_vocabulary": _matching_vocabulary(findings)} if stage else {}),
        **({"stage1_runs": {k: v["source"] for k, v in stage1.items()}} if stage1 else {}),
        **text_record,
    }
    with run_lock(out, enabled=is_rank_zero()):  # one writer per run folder, from config.yaml to the export
        if not resume and RunDir(out).last.is_file():  # before config.yaml is rewritten
            raise ConfigError(f"{out} already holds a run; resume it (--resume) or choose another folder")
        if not resume:
            saved = config if stage is None else config.model_copy(update={"stage": stage})
            write_run_config(
                out, {"pretrain": saved.to_dict(), "train": train_config.to_dict(), "record": record},
                manifest_hash=manifest.hash, seed=train_config.seed,
            )  # fmt: skip
        result = fit(recipe, dataset, train_config, out, resume=resume, run_record=record, export=False)
        export_towers(recipe.export_towers(), RunDir(out).exported, heads=recipe.export_heads(),
                      preprocessing=contract.replace(source_size=None), metadata=record)  # fmt: skip
    return result


# -- staged recipes (greenrfm) ----------------------------------------------------------------


@dataclass
class StagedResult:
    """What ``--stage all`` did: each stage's ``FitResult`` (stages finished earlier are skipped)."""

    run_dir: Path
    stages: dict[str, Any]

    @property
    def steps(self) -> int:
        return sum(r.steps for r in self.stages.values())

    @property
    def samples_seen(self) -> int:
        return sum(r.samples_seen for r in self.stages.values())


def _stage(recipe_cls, config: PretrainConfig) -> str | None:
    stages = tuple(getattr(recipe_cls, "stages", ()) or ())
    if not stages:
        given = [f"--{n.replace('_', '-')}" for n in ("stage", "init_image", "init_text") if getattr(config, n)]
        if given:
            raise ConfigError(f"{', '.join(given)} apply to staged recipes; recipe '{config.recipe}' has no stages")
        return None
    stage = config.stage or "all"
    if stage not in (*stages, "all"):
        raise ConfigError(f"recipe '{config.recipe}' has stages {', '.join(stages)} or all, not '{stage}'")
    return stage


def _run_all_stages(recipe_cls, config: PretrainConfig, out: Path, *, resume: bool) -> StagedResult:
    """Every stage in order into ``out/<stage>``; a finished stage (its export written) is skipped,
    an interrupted one resumed, so the same command (with ``--resume``) continues the sequence."""
    method_config = build_config(recipe_cls.Config, **config.method)
    if not getattr(method_config, "init_from_stage1", True):
        raise ConfigError("--stage all trains the stage-1 runs for the align stage; with init_from_stage1=false run "
                          "--stage align alone")  # fmt: skip
    if config.init_image or config.init_text:
        raise ConfigError("--init-image / --init-text apply to --stage align; --stage all trains its own stage-1 runs")
    if RunDir(out).config.is_file() and not resume:
        raise ConfigError(f"{out} already holds a staged run; resume it (--resume) or choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        write_run_config(out, {"pretrain": config.model_copy(update={"stage": "all"}).to_dict(),
                               "stages": list(recipe_cls.stages)}, manifest_hash=None, seed=None)  # fmt: skip
    results: dict[str, Any] = {}
    for stage in recipe_cls.stages:
        sub = out / stage
        if (RunDir(sub).exported / "config.json").is_file():
            log.info("stage %s: already finished in %s", stage, sub)
            continue
        update: dict[str, Any] = {"stage": stage}
        if stage == "align":  # the towers come from the two stage-1 runs
            update.update(init_image=str(out / "image"), init_text=str(out / "text"), backbone=None, img_size=None,
                          text_tower=None, contract=None)  # fmt: skip
        log.info("stage %s -> %s", stage, sub)
        results[stage] = _run_stage(recipe_cls, config.model_copy(update=update), sub, stage,
                                    resume=RunDir(sub).last.is_file())  # fmt: skip
    return StagedResult(out, results)


class _LabelRows:
    """Labels of a manifest's rows without their images (``{"labels", "index"}``): a text-only stage."""

    def __init__(self, manifest: Manifest):
        import numpy as np
        import torch

        self.manifest, self.findings = manifest, list(manifest.findings)
        self._labels = torch.from_numpy(np.asarray(manifest.labels(self.findings), dtype=np.float32))

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"labels": self._labels[index], "index": int(index)}

    def __getitems__(self, indices) -> list[dict[str, Any]]:
        return [self[int(i)] for i in indices]


def _matching_vocabulary(findings: list[str]) -> str | None:
    """The built-in label vocabulary whose findings are exactly these columns (e.g. ct-rate-18), if any."""
    from greenfm.labeling.findings import builtin_vocabularies, load_vocabulary

    for name in builtin_vocabularies():
        if set(load_vocabulary(name).ids) == set(findings):
            return name
    return None


def _training_rows(config: PretrainConfig) -> Manifest:
    manifest = load_checked_manifest(config.data, skip_bad=config.skip_bad)
    if manifest.has_splits:
        manifest = manifest.subset(manifest.table["split"].isin(config.splits))
        if len(manifest) == 0:
            raise ConfigError(f"{config.data}: no rows in split(s) {config.splits} to pretrain on")
    return manifest


def _with_reports(dataset, config: PretrainConfig, tower, *, what: str) -> tuple[Any, dict[str, Any]]:
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
        reports = manifest_reports(manifest, what=what)
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
