"""``greenfm scaling``: data-scaling studies of pretraining recipes (METHODS 5.3).

A study is a grid of cells, recipes x nested subset sizes. The training split's patients
are shuffled once (``subset_seed``) and each size is the shortest patient prefix holding
that many images (``greenfm.workflows.scaling_subsets``), so subsets are nested and
patient-closed. Every cell trains the same number of optimiser steps with the same batch
and schedule from the same init (exported once per recipe to ``init/<recipe>/``), and
every model, the init included as n = 0, gets the same frozen-encoder evaluations on the
same val/test patients. Recipes share subsets and evaluations, so they pair cell by cell.

Cells are written as they finish (``cells.jsonl``) and never recomputed: rerunning the
command on the same ``out`` continues where it stopped, and a pretraining run interrupted
after a checkpoint resumes from it. What defines the study (data, sizes, steps, batch,
init, ...) is fixed by its first run (``scaling_study.json``); recipes and evaluations may
be added later. Files in ``out``:

``scaling_study.json``      the options, the patient order and the subsets (asked and actual sizes)
``subsets/<n>.parquet``      each subset's training manifest
``init/<recipe>/``           the shared init (exported towers) and its evaluations (n = 0)
``cells/<recipe>-<n>/``      the pretraining run (compute.json, exported/) and its evaluations
``scaling.json`` / ``scaling_points.csv`` / ``scaling_fits.csv`` / ``scaling_pairs.csv``
                             points with patient-bootstrap CIs, power-law fits, paired differences
                             (``greenfm.workflows.scaling_results``), rendered by ``greenfm report``
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from greenfm.errors import ConfigError
from greenfm.methods.registry import get_method
from greenfm.workflows.scaling_cells import (
    cell_training,
    evaluate_cell,
    evaluation_data,
    has_text,
    pretrain_cell,
    save_init,
)
from greenfm.workflows.scaling_config import STUDY_FIELDS, ScalingConfig
from greenfm.workflows.scaling_subsets import SubsetPlan, nested_patient_subsets

log = logging.getLogger(__name__)

STUDY, CELLS = "scaling_study.json", "cells.jsonl"
INIT_KEY = "init"
# TrainConfig options that change how fast a cell runs, not what it computes: free to change on resume
VOLATILE_TRAIN = ("threads", "num_workers", "progress_bar", "show_ledger", "track_energy", "country_iso_code")


def run_scaling(config: ScalingConfig, out: str | Path, *, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or continue) a scaling study into ``out``; returns the summary ``write_results`` wrote."""
    from greenfm.workflows.inputs import load_checked_manifest
    from greenfm.workflows.scaling_results import write_results

    out = Path(out)
    config = _absolute(config)
    for recipe in config.recipe:
        stages = get_method(recipe).stages  # an unknown recipe lists the valid ones before any work
        if stages:  # a cell trains one run from one init; a staged recipe chains several runs
            raise ConfigError(
                f"recipe {recipe} trains in stages ({', '.join(stages)}) from several runs, and a scaling cell "
                "trains one run from one init: scale one stage's objective as a recipe of its own (an image "
                "stage: --recipe supervised; an alignment: --recipe unicl or clip)")
    trainings = {recipe: cell_training(config, recipe) for recipe in config.recipe}
    notes = _evaluation_notes(config)

    manifest = load_checked_manifest(config.data, skip_bad=config.skip_bad)
    if not manifest.has_splits:
        raise ConfigError(f"{config.data}: no split column; the subsets come from the train split (`greenfm data split`)")
    train = manifest.subset(manifest.table["split"].isin(config.splits).to_numpy())
    if len(train) == 0:
        raise ConfigError(f"{config.data}: no rows in split(s) {config.splits} to draw subsets from")
    plan = nested_patient_subsets(train.table["patient_id"], config.sizes, seed=config.subset_seed)
    eval_path = Path(config.eval_data or config.data)
    eval_manifest = manifest if eval_path == Path(config.data) else load_checked_manifest(eval_path, skip_bad=config.skip_bad)
    data = evaluation_data(config, eval_path, eval_manifest)

    out.mkdir(parents=True, exist_ok=True)
    _check_or_write_study(out, config, plan, manifest.hash)
    for note in plan.notes + notes:
        echo(f"note: {note}")
    subsets = _write_subsets(out, train, plan)
    records = read_cells(out / CELLS)
    before = len(records)
    evaluations = {recipe: [e for e in config.eval if e != "zeroshot" or has_text(recipe)] for recipe in config.recipe}

    def record(key: str, make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        if key not in records:
            records[key] = {"key": key, **make()}
            append_cell(out / CELLS, records[key])
        return records[key]

    seed = int(config.train.get("seed", 0))
    for subset in [None, *plan.subsets]:  # the init first, then size by size: recipes pair as soon as possible
        size = INIT_KEY if subset is None else subset.key
        for recipe in config.recipe:
            if subset is None:
                folder = out / "init" / recipe
                model = folder
                save_init(config, recipe, train, folder, seed)
                base = {"recipe": recipe, "size": INIT_KEY, "images": 0, "patients": 0, "requested": []}
            else:
                folder = out / "cells" / f"{recipe}-{subset.key}"
                model = folder
                base = {"recipe": recipe, "size": subset.key, "images": subset.images, "patients": subset.patients,
                        "requested": list(subset.requested)}  # fmt: skip

                def train_cell(subset=subset, recipe=recipe, folder=folder, base=base):
                    echo(f"{recipe}: pretraining on {subset.images:,} images of {subset.patients:,} patients, "
                         f"{trainings[recipe].steps} steps of {trainings[recipe].batch_size}")  # fmt: skip
                    if subset.images < trainings[recipe].batch_size:
                        echo(f"  note: the subset holds fewer images ({subset.images}) than a batch "
                             f"({trainings[recipe].batch_size}); its batches hold {subset.images}")  # fmt: skip
                    got = pretrain_cell(config, recipe, subsets[subset.key], out / "init" / recipe, folder,
                                        trainings[recipe], subset.images, echo)  # fmt: skip
                    echo(f"  {got['steps']} steps, {got['epochs']:.2f} epochs")
                    return {**base, "kind": "pretrain", "run_dir": str(folder.relative_to(out)), **got}

                record(f"{recipe}/{size}/pretrain", train_cell)
            for evaluation in evaluations[recipe]:

                def evaluate(evaluation=evaluation, model=model, folder=folder, base=base, recipe=recipe, size=size):
                    points = evaluate_cell(evaluation, model, folder, config, data, echo)
                    shown = ", ".join(f"{p['evaluation']} {_fmt(p['value'])}" for p in points)
                    echo(f"{recipe} at {size}: {shown}")
                    return {**base, "kind": "evaluation", "evaluation": evaluation, "points": points}

                record(f"{recipe}/{size}/{evaluation}", evaluate)
    summary = write_results(out, records, config, plan, notes=plan.notes + notes)
    echo(f"{len(records) - before} cell(s) run, {before} reused")
    echo(summary["table"])
    return summary


# ----------------------------------------------------------------------------- study state


def _check_or_write_study(out: Path, config: ScalingConfig, plan: SubsetPlan, manifest_hash: str) -> None:
    """A continued study must be the same study: same data, sizes, steps and options (recipes and
    evaluations may grow); a new one records what defines it."""
    path = out / STUDY
    defining = {key: config.to_dict()[key] for key in STUDY_FIELDS} | {"manifest_hash": manifest_hash}
    defining["train"] = {k: v for k, v in config.train.items() if k not in VOLATILE_TRAIN}
    if path.is_file():
        saved = json.loads(path.read_text())
        before = saved.get("defining", {})
        changed = [key for key in defining if before.get(key) != defining[key]]
        if changed:
            detail = "; ".join(f"{key}: was {before.get(key)!r}, now {defining[key]!r}" for key in changed[:3])
            raise ConfigError(
                f"{out} holds a scaling study with other {', '.join(changed)} ({detail}); rerun it with its own "
                "options to continue it, or choose another --out"
            )
        recipes = list(dict.fromkeys([*saved.get("recipes", []), *config.recipe]))
        evals = list(dict.fromkeys([*saved.get("evaluations", []), *config.eval]))
    else:
        recipes, evals = list(config.recipe), list(config.eval)
    path.write_text(json.dumps({"schema": "greenfm.scaling-study/1", "defining": defining, "recipes": recipes,
                                "evaluations": evals, "plan": plan.to_dict()}, indent=2) + "\n")  # fmt: skip


def _write_subsets(out: Path, train, plan: SubsetPlan) -> dict[str, Path]:
    folder = out / "subsets"
    paths = {}
    for subset in plan.subsets:
        path = folder / f"{subset.key}.parquet"
        if not path.is_file():
            train.subset(plan.mask(train.table["patient_id"], subset)).save(path)
        paths[subset.key] = path
    return paths


def read_cells(path: Path) -> dict[str, dict[str, Any]]:
    """Finished cells by key; a last line cut short by an interruption is ignored."""
    records: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            records[row["key"]] = row
    return records


def append_cell(path: Path, record: dict[str, Any]) -> None:
    from greenfm.evaluate.metrics import json_safe

    with path.open("a") as handle:
        handle.write(json.dumps(json_safe(record)) + "\n")
        handle.flush()


def _evaluation_notes(config: ScalingConfig) -> list[str]:
    notes = []
    if "zeroshot" in config.eval:
        for recipe in config.recipe:
            if not has_text(recipe):
                notes.append(f"zero-shot does not apply to '{recipe}' (an image-only recipe has no text tower): skipped")
    return notes


def _absolute(config: ScalingConfig) -> ScalingConfig:
    """Input paths as absolute paths, so the study's record does not depend on the working folder."""
    update: dict[str, Any] = {"data": str(Path(config.data).expanduser().resolve())}
    if config.eval_data:
        update["eval_data"] = str(Path(config.eval_data).expanduser().resolve())
    if config.cache:
        update["cache"] = str(Path(config.cache).expanduser().resolve())
    for key in ("init", "text_tower", "contract", "vocab"):
        value = getattr(config, key)
        if value and Path(value).expanduser().exists():
            update[key] = str(Path(value).expanduser().resolve())
    return config.model_copy(update=update)


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}"
