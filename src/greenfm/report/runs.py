"""Read what a run folder holds, tolerating every artefact being absent or unreadable.

A "run" here is any folder a report or an export is pointed at: a training run
(``greenfm.engine.run_dir``), a fine-tuning run, or a bare evaluation output
folder. The engine's files are read from the folder itself; results are looked
for there, then one level down (``RUN_DIR/probe/probe.json``), first match in
sorted order, and predictions beside the results they belong to:

=========================  ===============================================================
``config.yaml``            what the run was asked to do, with ``provenance`` (top level only)
``compute.json``           the compute ledger; its ``run`` is the run record (top level only)
``metrics.jsonl``          step / epoch rows (top level only)
``finetune.json``          fine-tuning results; ``test`` is a ``Metrics.to_dict()``
``probe.json``             linear-probe results; ``test`` is a ``Metrics.to_dict()``
``predictions.parquet``    per-image scores, long: ``id, patient_id, split, finding, label, score``
                           (``predictions.csv`` is read too)
``label_efficiency.*``     label-efficiency results (schema: ``greenfm.report.label_efficiency``)
``zeroshot.json``          zero-shot classification: prompts and a ``Metrics.to_dict()`` under ``test``
``retrieval.json``         image-text retrieval: Recall@K both ways with random baselines (schemas of
                           both: ``greenfm.evaluate.image_text_results``)
``exported/*.safetensors`` weights; their header metadata ``greenfm`` holds the run record
                           (also read from ``compute.json`` ``run`` and ``config.yaml`` ``record``)
=========================  ===============================================================

Nothing here raises for a missing or broken artefact: it is recorded in
``missing`` (what is absent and what it would have given) or ``problems``
(present but unreadable), and the report says so.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from greenfm.errors import BadInputError

log = logging.getLogger(__name__)

PREDICTION_COLUMNS = ("id", "patient_id", "split", "finding", "label", "score")
# Weights a run may hold, most specific first: a method's own export, the selected
# fine-tuning epoch (LoRA merged), the engine's last export.
WEIGHT_FILES = ("exported/model.safetensors", "exported/best.safetensors", "exported/last.safetensors")


@dataclass
class RunArtifacts:
    """Everything readable in one run folder (see the module docstring)."""

    root: Path
    name: str
    config: dict[str, Any] | None = None
    compute: dict[str, Any] | None = None
    record: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    finetune: dict[str, Any] | None = None
    probe: dict[str, Any] | None = None
    predictions: pd.DataFrame | None = None
    label_efficiency: pd.DataFrame | None = None
    comparison: dict[str, Any] | None = None  # study_comparison.json from `greenfm evaluate compare`
    zeroshot: dict[str, Any] | None = None  # zeroshot.json (zero-shot classification)
    retrieval: dict[str, Any] | None = None  # retrieval.json (image-text retrieval)
    weights: Path | None = None
    n_parameters: int | None = None
    export_config: dict[str, Any] | None = None  # exported/config.json (a method's own export)
    sources: dict[str, Path] = field(default_factory=dict)  # artefact -> file it was read from
    missing: dict[str, str] = field(default_factory=dict)  # artefact -> what its absence costs
    problems: list[str] = field(default_factory=list)  # "file: why it could not be read"

    @property
    def evaluation(self) -> dict[str, Any] | None:
        """The test-split ``Metrics`` dict (fine-tuning first, else the probe, else zero-shot), or None."""
        for result in (self.finetune, self.probe, self.zeroshot):
            if isinstance(result, dict) and isinstance(result.get("test"), dict):
                return result["test"]
        return None

    @property
    def evaluation_source(self) -> str | None:
        if self.finetune is not None and isinstance(self.finetune.get("test"), dict):
            return "finetune"
        if self.probe is not None and isinstance(self.probe.get("test"), dict):
            return "probe"
        if self.zeroshot is not None and isinstance(self.zeroshot.get("test"), dict):
            return "zeroshot"
        return None

    @property
    def method(self) -> str | None:
        """What produced the run: the record's ``method``, else the config's, else the results' kind."""
        for source in (self.record, self.config or {}):
            value = source.get("method") or source.get("recipe")
            if isinstance(value, str):
                return value
            if isinstance(value, dict) and isinstance(value.get("name"), str):
                return value["name"]
        if self.finetune is not None:
            return "finetune"
        if self.probe is not None:
            return "linear-probe"
        if self.zeroshot is not None:
            return "zero-shot"
        if self.retrieval is not None:
            return "retrieval"
        return None

    @property
    def encoder_name(self) -> str | None:
        """The backbone's timm name (from the record, the config or the export), else the model it started from."""
        towers = self.record.get("towers") if isinstance(self.record.get("towers"), dict) else {}
        candidates = [
            self.record.get("encoder_spec"),
            self.record.get("encoder"),
            towers.get("image"),  # what the run trained, an --init folder's architecture included
            (self.config or {}).get("encoder"),
            (self.export_config or {}).get("model"),
            self.record.get("backbone"),
        ]
        for value in candidates:
            if isinstance(value, dict) and isinstance(value.get("name"), str):
                return describe_spec(value)
            if isinstance(value, str) and value:
                return value
        ref = self.record.get("model_ref")
        return f"from {ref}" if isinstance(ref, str) and ref else None

    @property
    def provenance(self) -> dict[str, Any]:
        value = (self.config or {}).get("provenance")
        return value if isinstance(value, dict) else {}

    @property
    def manifest_hash(self) -> str | None:
        for value in (
            self.provenance.get("manifest_hash"),
            self.record.get("manifest_hash"),
            ((self.probe or {}).get("sources") or {}).get("manifest_hash"),
        ):
            if isinstance(value, str) and value:
                return value
        return None


def find_artifact(root: Path, *names: str, nested: bool = True) -> Path | None:
    """The first of ``names`` in ``root``, else (``nested``) in a direct sub-folder (sorted), else None."""
    for name in names:
        if (root / name).is_file():
            return root / name
    if not nested:
        return None
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for name in names:
            if (sub / name).is_file():
                return sub / name
    return None


def read_run(path: str | Path, *, name: str | None = None) -> RunArtifacts:
    """Read a run folder (a file in one, such as ``curation.json``, stands for its folder);
    only a path that does not exist is an error."""
    root = Path(path)
    if root.is_file():
        log.info("%s is a file: reporting on the run folder that holds it, %s", root, root.parent)
        root = root.parent
    if not root.is_dir():
        raise BadInputError("run folder not found", source=str(root))
    run = RunArtifacts(root=root, name=name or root.resolve().name)

    run.config = _read(
        run,
        "config",
        find_artifact(root, "config.yaml", nested=False),
        _yaml_mapping,
        "the run's configuration and provenance (written by the training verbs)",
    )
    run.compute = _read(
        run,
        "compute",
        find_artifact(root, "compute.json", nested=False),
        _json_mapping,
        "the compute ledger (compute.json is written when training ends)",
    )
    metrics = find_artifact(root, "metrics.jsonl", nested=False)
    run.metrics = _read(run, "metrics", metrics, _jsonl, "training curves") or []
    run.finetune = _read(run, "finetune", find_artifact(root, "finetune.json"), _json_mapping, None)
    run.probe = _read(run, "probe", find_artifact(root, "probe.json"), _json_mapping, None)
    run.zeroshot = _read(run, "zeroshot", find_artifact(root, "zeroshot.json"), _json_mapping, None)
    run.retrieval = _read(run, "retrieval", find_artifact(root, "retrieval.json"), _json_mapping, None)
    if run.finetune is None and run.probe is None and run.zeroshot is None:
        run.missing["evaluation"] = "test metrics (finetune.json or probe.json from `greenfm probe`)"
    run.predictions = _read(
        run,
        "predictions",
        _predictions_path(run),
        _predictions,
        "per-image test scores (predictions.parquet), needed for ROC curves",
    )

    from greenfm.report.label_efficiency import FILE_NAMES, read_label_efficiency

    run.label_efficiency = _read(
        run,
        "label_efficiency",
        find_artifact(root, *FILE_NAMES),
        read_label_efficiency,
        "label-efficiency results (`greenfm evaluate label-efficiency`)",
    )

    run.comparison = _read(run, "comparison", find_artifact(root, "study_comparison.json", nested=False),
                           _json_mapping, None)  # fmt: skip
    if run.compute is None:  # a study or a staged run: its runs' ledgers, summed
        run.compute = study_compute(root, run.config)
        if run.compute is not None:
            run.missing.pop("compute", None)

    record: dict[str, Any] = {}
    if run.compute is not None and isinstance(run.compute.get("run"), dict):
        record.update(run.compute["run"])
    for rel in WEIGHT_FILES:
        if (root / rel).is_file():
            run.weights = run.weights or root / rel
            for key, value in _safetensors_record(root / rel).items():
                record.setdefault(key, value)
    config_record = (run.config or {}).get("record")  # the workflows also save the record in config.yaml
    if isinstance(config_record, dict):
        for key, value in config_record.items():
            record.setdefault(key, value)
    if (root / "exported" / "config.json").is_file():
        run.export_config = _read(run, "export_config", root / "exported" / "config.json", _json_mapping, None)
        export_record = (run.export_config or {}).get("metadata")  # a method's export keeps the record here
        if isinstance(export_record, dict):
            for key, value in export_record.items():
                record.setdefault(key, value)
    run.record = record
    if run.weights is not None:
        run.n_parameters = _safetensors_numel(run.weights)
    else:
        run.missing["weights"] = "exported weights (exported/*.safetensors)"
    return run


def describe_spec(spec: dict[str, Any]) -> str:
    """A timm name, with the size kwargs that make it another model (greenfm's ``vit_tiny_test`` is
    ``vit_small_patch14_reg4_dinov2`` at width 64, depth 4, patch 8: not a ViT-S); greenfm's own name
    where the spec carries one (``r3d_18_lite`` is torchvision's ``r3d_18`` with a k4s4 stem)."""
    kwargs = spec.get("kwargs") if isinstance(spec.get("kwargs"), dict) else {}
    shape = [f"{label} {kwargs[key]}" for key, label in (("embed_dim", "width"), ("depth", "depth"),
                                                         ("patch_size", "patch")) if key in kwargs]  # fmt: skip
    name = spec.get("greenfm_name") if isinstance(spec.get("greenfm_name"), str) else spec["name"]
    return f"{name} ({', '.join(shape)})" if shape else str(name)


def study_compute(root: Path, config: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The summed ledger of a folder whose work ran in sub-runs: a label-efficiency study's fine-tuned
    cells (``runs/*/compute.json``), a scaling study's pretraining cells (``cells/*/compute.json``) or
    a staged ``--stage all`` run's stages (``<stage>/compute.json``, the stages its ``config.yaml``
    lists). A sum with any sub-run unmeasured is unavailable, never partial. None without sub-runs."""
    from greenfm.engine.ledger import UNAVAILABLE, ledger_totals

    stages = (config or {}).get("stages")
    patterns = ["runs/*/compute.json", "cells/*/compute.json"]
    patterns += [f"{stage}/compute.json" for stage in stages if isinstance(stage, str)] if isinstance(stages, list) else []
    ledgers, found = [], []
    for pattern in patterns:
        for path in sorted(root.glob(pattern)):
            try:
                ledgers.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
            if pattern not in found:
                found.append(pattern)
    if not ledgers:
        return None
    totals = ledger_totals(ledgers)
    first = ledgers[0]
    reasons = {k: "a summed run did not measure it" for k, v in totals.items() if v == UNAVAILABLE}
    return {**totals, "device_type": first.get("device_type"), "device_name": first.get("device_name"),
            "device_count": first.get("device_count", 1), "energy_method": first.get("energy_method"),
            "unavailable": reasons, "summed_over": f"{len(ledgers)} run(s) ({', '.join(found)})"}


def _predictions_path(run: RunArtifacts) -> Path | None:
    """Per-image predictions beside the results they belong to (probe.json / finetune.json), else anywhere."""
    names = ("predictions.parquet", "predictions.csv")
    for key in ("finetune", "probe"):
        folder = run.sources.get(key)
        if folder is not None and (found := find_artifact(folder.parent, *names, nested=False)):
            return found
    return find_artifact(run.root, *names)


# -- readers (each raises on a bad file; _read turns that into a recorded problem) ------------


def _read(run: RunArtifacts, key: str, path: Path | None, reader, why_missing: str | None):
    if path is None:
        if why_missing:
            run.missing[key] = why_missing
        return None
    try:
        value = reader(path)
    except Exception as exc:  # any unreadable artefact is reported, never fatal
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        run.problems.append(f"{path}: cannot be read ({first})")
        log.warning("report: %s cannot be read (%s)", path, first)
        return None
    run.sources[key] = path
    return value


def _yaml_mapping(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError("not a YAML mapping")
    return data


def _json_mapping(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def _jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a crash
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _predictions(path: Path) -> pd.DataFrame:
    table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    missing = [c for c in ("finding", "label", "score") if c not in table.columns]
    if missing:
        raise ValueError(f"lacks column(s) {missing}; expected {list(PREDICTION_COLUMNS)}")
    table = table.copy()
    if "split" not in table.columns:
        table["split"] = "test"
    table["finding"] = table["finding"].astype(str)
    table["split"] = table["split"].astype(str).str.lower()
    table["label"] = pd.to_numeric(table["label"], errors="coerce")
    table["score"] = pd.to_numeric(table["score"], errors="coerce")
    return table


def _safetensors_record(path: Path) -> dict[str, Any]:
    """The run record an engine / fine-tuning export stores in its header (empty if none)."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
        data = json.loads(meta.get("greenfm", "{}"))
    except Exception:  # a header without greenfm metadata is fine
        return {}
    if not isinstance(data, dict):
        return {}
    return data["record"] if isinstance(data.get("record"), dict) else data


def _safetensors_numel(path: Path) -> int | None:
    """Parameter count from the header's tensor shapes, without reading the weights."""
    try:
        from safetensors import safe_open

        total = 0
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():
                count = 1
                for dim in handle.get_slice(key).get_shape():
                    count *= int(dim)
                total += count
        return total
    except Exception:  # unreadable header: the count is simply unavailable
        return None


# -- the data a run used ---------------------------------------------------------------------


@dataclass
class DataFacts:
    """What a run says about its data; None where it does not say."""

    manifest_hash: str | None = None
    manifest_path: Path | None = None
    manifest_problem: str | None = None  # why the manifest file could not be described
    rows: int | None = None
    patients: int | None = None
    splits: dict[str, tuple[int, int]] = field(default_factory=dict)  # split -> (images, patients)
    hash_matches: bool | None = None  # the file today vs the hash recorded by the run
    image_level_patients: bool = False  # no patient ids: each image is its own patient (MedMNIST)
    hash_of: str = "the file"  # what the recorded hash matched: the file, or the rows of some splits
    current_hash: str | None = None
    findings: list[tuple[str, int, int, int, int]] = field(default_factory=list)  # name, pos, neg, uncertain, unknown
    training_images: int | None = None  # the training set the engine saw (compute.json)
    probe_counts: dict[str, int] = field(default_factory=dict)


_MANIFEST_KEYS = ("manifest", "data", "labels_manifest", "train_manifest", "labels")


def find_manifest_path(run: RunArtifacts) -> Path | None:
    """A manifest file named in the config or record (``manifest``, ``data`` ... keys), resolved against the run."""
    found: list[str] = []

    def walk(value: Any, depth: int) -> None:
        if depth > 3 or found or not isinstance(value, dict):
            return
        for key in _MANIFEST_KEYS:
            v = value.get(key)
            if isinstance(v, str) and v.lower().endswith((".csv", ".parquet")):
                found.append(v)
                return
        for v in value.values():
            walk(v, depth + 1)

    walk(run.config or {}, 0)
    walk(run.record, 0)
    if not found and isinstance((run.probe or {}).get("sources"), dict):
        manifest = run.probe["sources"].get("manifest")
        if isinstance(manifest, str) and manifest:
            found.append(manifest)
    if not found:
        return None
    path = Path(found[0]).expanduser()
    if not path.is_absolute() and not path.is_file() and (run.root / path).is_file():
        path = run.root / path
    return path


def describe_data(run: RunArtifacts) -> DataFacts:
    """Rows, patients, splits and label counts of the run's manifest, as far as they can be found."""
    facts = DataFacts(manifest_hash=run.manifest_hash, manifest_path=find_manifest_path(run))
    if run.compute is not None and isinstance(run.compute.get("dataset_size"), int):
        facts.training_images = run.compute["dataset_size"]
    counts = (run.probe or {}).get("counts")
    if isinstance(counts, dict):
        facts.probe_counts = {k: v for k, v in counts.items() if isinstance(v, int)}
    if facts.manifest_path is None:
        return facts
    if not facts.manifest_path.is_file():
        facts.manifest_problem = "not found on this machine"
        return facts
    from greenfm.data.manifest import load_manifest
    from greenfm.errors import GreenfmError

    try:
        manifest = load_manifest(facts.manifest_path, check_files=False, skip_bad=True)
    except GreenfmError as exc:
        facts.manifest_problem = f"cannot be read ({exc})"
        return facts
    table = manifest.table
    facts.rows, facts.patients = len(table), int(table["patient_id"].nunique())
    facts.image_level_patients = "meta_patient_note" in table.columns or bool(
        (table["patient_id"].astype(str) == table["id"].astype(str)).all())
    if manifest.has_splits:
        split = table["split"].astype("string").fillna("none")
        for name in split.unique():
            rows = split == name
            facts.splits[str(name)] = (int(rows.sum()), int(table.loc[rows, "patient_id"].nunique()))
    facts.current_hash = manifest.hash
    if facts.manifest_hash:
        facts.hash_matches = manifest.hash == facts.manifest_hash
        if not facts.hash_matches and manifest.has_splits:  # a run may hash the rows it trained on (its splits)
            split = manifest.table["split"].astype("string")
            for names in (["train"], ["train", "val"], ["val"], ["test"]):
                rows = split.isin(names).fillna(False).to_numpy(dtype=bool)
                if rows.any() and manifest.subset(rows).hash == facts.manifest_hash:
                    facts.hash_matches, facts.hash_of = True, f"its {' and '.join(names)} rows"
                    break
        probe_hash = ((run.probe or {}).get("sources") or {}).get("manifest_hash")
        if not facts.hash_matches and probe_hash and manifest.hash == probe_hash:  # the probe's data, not training's
            facts.hash_matches, facts.hash_of = True, "the file (the probe's data; training used other data)"
    for finding in manifest.findings:
        v = table[finding]
        facts.findings.append(
            (finding, int((v == 1).sum()), int((v == 0).sum()), int((v == -1).sum()), int(v.isna().sum()))
        )
    return facts
