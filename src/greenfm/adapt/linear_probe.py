"""Linear probes on frozen embeddings, under two named protocols.

``retfound-green`` (METHODS 7.1): StandardScaler -> LogisticRegression(C=1, L2,
lbfgs, max_iter=20000, random_state=42), multinomial for multi-class; no tuning,
no class weights. ``tuned``: the same model with C chosen on the validation split
by macro AUROC from a log grid (warm-started along the grid), keeping the fit on
train at the chosen C.

Tasks: ``binary`` and ``multilabel`` fit one model per finding on its labelled
training rows (-1 / NaN excluded per finding); ``multiclass`` fits one multinomial
model on the classes of one integer column, or of mutually exclusive 0/1 columns,
and scores class k vs rest from probability column k. A finding that cannot be
fitted (no labels, one class in train) is skipped and counted, never scored 0.5.

``probe`` is the CLI verb: embeddings file + manifest in, per-finding AUROC /
AUPRC with patient-bootstrap CIs out. ``load_probe_inputs`` + ``run_probe`` do
the same in two steps, so many probes (findings, protocols, label fractions)
reuse one set of cached embeddings read once; ``fit_probes`` is the fitting step
alone (findings fitted in parallel with ``n_jobs``, the tuned grid warm-started).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from pydantic import Field
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

import greenfm
from greenfm.config import GreenfmConfig, build_config
from greenfm.data.embeddings import Embeddings, align_embeddings, read_embeddings
from greenfm.data.manifest import NO_SKIP_HINT, Manifest, assert_no_patient_leakage, finding_columns, load_manifest
from greenfm.data.tasks import is_one_hot
from greenfm.errors import BadInputError, ConfigError
from greenfm.evaluate.bootstrap import attach_intervals, bootstrap_columns, patient_resample_counts
from greenfm.evaluate.metrics import BinaryColumns, BootstrapInfo, FindingMetrics, Metrics, clip, json_safe, score_columns

PROTOCOLS = ("retfound-green", "tuned")
_ALIASES = {"rfg": "retfound-green"}
DEFAULT_C_GRID = tuple(float(c) for c in np.logspace(-4, 2, 13))
Protocol = Literal["retfound-green", "tuned", "rfg"]
TaskName = Literal["auto", "binary", "multiclass", "multilabel"]


class ProbeConfig(GreenfmConfig):
    """Options of ``greenfm probe``; saved in ``probe.json``."""

    protocol: Protocol = Field("retfound-green", description="retfound-green (fixed C=1) or tuned (C chosen on val)")
    findings: list[str] | None = Field(None, description="finding columns to probe (default: all)")
    task: TaskName = Field("auto", description="auto, binary, multiclass or multilabel")
    bootstrap: int = Field(1000, ge=0, description="patient-bootstrap resamples for CIs (0: none)")
    seed: int = Field(0, description="seed of the bootstrap resamples")
    c_grid: list[float] = Field(list(DEFAULT_C_GRID), min_length=1, description="C values tried by `tuned`")
    n_jobs: int = Field(1, description="findings fitted in parallel (joblib)")


@dataclass
class FittedProbes:
    """One fitted pipeline per probed column (a single one for multi-class)."""

    task: str
    names: list[str]  # findings, or classes for multi-class
    models: dict[str, Pipeline]
    skipped: dict[str, str]  # column -> why it has no model
    chosen_c: float
    val_macro_auroc_by_c: dict[float, float | None] = field(default_factory=dict)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(N, K) scores: P(finding) per column, or class probabilities; NaN where skipped."""
        out = np.full((len(x), len(self.names)), np.nan)
        if self.task == "multiclass":
            model = self.models["multiclass"]
            out[:] = 0.0  # classes absent from train get no probability mass
            out[:, model.classes_.astype(int)] = model.predict_proba(x)
            return out
        for j, name in enumerate(self.names):
            if name in self.models:
                out[:, j] = self.models[name].predict_proba(x)[:, 1]
        return out


@dataclass
class ProbeResult:
    """Everything ``probe`` measured; ``to_dict`` is what ``probe.json`` holds."""

    config: dict[str, Any]
    task: str
    names: list[str]
    test: Metrics
    val: Metrics | None
    skipped: dict[str, str]
    chosen_c: float
    counts: dict[str, int]
    val_macro_auroc_by_c: dict[str, float | None]
    predictions: pd.DataFrame = field(repr=False)
    sources: dict[str, Any] = field(default_factory=dict)
    classification: dict[str, Any] | None = None  # multi-class: test accuracy and confusion matrix

    @property
    def macro_auroc(self) -> float | None:
        return self.test.macro_auroc

    def to_dict(self) -> dict[str, Any]:
        return json_safe(
            {
                "greenfm_version": greenfm.__version__,
                "config": self.config,
                "task": self.task,
                "names": self.names,
                "chosen_c": self.chosen_c,
                "val_macro_auroc_by_c": self.val_macro_auroc_by_c,
                "skipped_in_training": self.skipped,
                "counts": self.counts,
                "sources": self.sources,
                "test": self.test.to_dict(),
                "val": self.val.to_dict() if self.val is not None else None,
                **({"test_classification": self.classification} if self.classification else {}),
            }
        )

    def save(self, out: str | Path) -> Path:
        """Write ``probe.json`` and ``predictions.parquet`` (per-image val/test scores)."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "probe.json").write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        self.predictions.to_parquet(out / "predictions.parquet", index=False)
        return out

    def summary(self) -> str:
        """A short plain-text table of the test metrics for the terminal."""
        text = f"{self.protocol} probe, {self.task}, test split\n" + self.test.summary()
        if self.classification:
            c = self.classification
            width = max(len(n) for n in c["classes"]) + 2
            rows = [f"accuracy {c['accuracy']:.3f} ({c['correct']} of {c['n']} test images); confusion matrix "
                    "(rows: true class, columns: predicted)",
                    " " * width + "".join(f"{clip(n, 10):>11}" for n in c["classes"])]  # fmt: skip
            rows += [f"{n:<{width}}" + "".join(f"{v:>11}" for v in row) for n, row in zip(c["classes"], c["matrix"])]
            text += "\n" + "\n".join(rows)
        return text

    @property
    def protocol(self) -> str:
        return self.config["protocol"]


def protocol_name(name: str) -> str:
    """The canonical protocol name; unknown names list the valid ones."""
    canonical = _ALIASES.get(name, name)
    if canonical not in PROTOCOLS:
        raise ConfigError(f"unknown probe protocol {name!r}; choose one of {', '.join(PROTOCOLS)}")
    return canonical


def fit_probes(
    x_train: np.ndarray,
    y_train: np.ndarray,
    *,
    task: Literal["binary", "multiclass", "multilabel"],
    names: Sequence[str],
    protocol: str = "retfound-green",
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    c_grid: Sequence[float] = DEFAULT_C_GRID,
    n_jobs: int = 1,
) -> FittedProbes:
    """Fit the probes of one task; ``y`` is (N,) class indices or (N, K) 1/0/NaN/-1.

    ``tuned`` needs ``x_val``/``y_val`` and picks one C for all columns by macro
    validation AUROC (ties go to the smaller C, i.e. stronger regularisation).
    """
    protocol = protocol_name(protocol)
    grid = sorted(float(c) for c in c_grid) if protocol == "tuned" else [1.0]
    if protocol == "tuned" and (x_val is None or y_val is None or len(x_val) == 0):
        raise BadInputError("protocol 'tuned' chooses C on the validation split, and there is none")
    names = list(names)
    if task == "multiclass":
        y = np.asarray(y_train, dtype=float)
        labelled = np.isfinite(y) & (y >= 0)
        present = np.unique(y[labelled]).astype(int)
        if len(present) and (present.max() >= len(names) or (present != np.unique(y[labelled])).any()):
            raise BadInputError(f"multi-class labels must be class indices 0..{len(names) - 1}")
        skipped = {names[k]: "absent from train" for k in range(len(names)) if k not in present}
        if len(present) < 2:
            raise BadInputError(f"multi-class probe needs two classes in train, found {len(present)}")
        jobs = {"multiclass": (labelled, y)}
    else:
        y = np.asarray(y_train, dtype=float).reshape(len(x_train), -1)
        if y.shape[1] != len(names):
            raise BadInputError(f"{y.shape[1]} label column(s) for {len(names)} names")
        y = np.where(y == -1, np.nan, y)
        jobs, skipped = {}, {}
        for j, name in enumerate(names):
            labelled = np.isfinite(y[:, j])
            n_pos = int((y[labelled, j] == 1).sum())
            if not labelled.any():
                skipped[name] = "no labels in train"
            elif n_pos in (0, int(labelled.sum())):
                skipped[name] = f"one class in train ({n_pos} positive of {int(labelled.sum())})"
            else:
                jobs[name] = (labelled, y[:, j])
    if not jobs:
        raise BadInputError(f"no finding can be fitted: {'; '.join(f'{k}: {v}' for k, v in skipped.items())}")

    paths = Parallel(n_jobs=n_jobs)(delayed(_fit_path)(x_train[rows], t[rows], grid) for rows, t in jobs.values())
    paths = dict(zip(jobs, paths, strict=True))
    best, by_c = 0, {}
    if len(grid) > 1:
        by_c = _val_macro_by_c(paths, grid, task, names, skipped, x_val, y_val)
        scored = {i: v for i, v in enumerate(by_c.values()) if v is not None}
        if not scored:
            raise BadInputError("cannot choose C: no finding has both classes in the validation split")
        best = max(scored, key=lambda i: (scored[i], -i))
    models = {name: path[best] for name, path in paths.items()}
    return FittedProbes(task, names, models, skipped, grid[best], by_c)


def run_probe(
    x: np.ndarray,
    table: pd.DataFrame,
    *,
    findings: Sequence[str] | None = None,
    protocol: str = "retfound-green",
    task: TaskName = "auto",
    bootstrap: int = 1000,
    seed: int = 0,
    c_grid: Sequence[float] = DEFAULT_C_GRID,
    n_jobs: int = 1,
) -> ProbeResult:
    """Probe rows ``x`` (aligned with ``table``: ``id``, ``patient_id``, ``split``, findings)."""
    config = build_config(
        ProbeConfig, protocol=protocol, findings=findings, task=task, bootstrap=bootstrap, seed=seed,
        c_grid=list(c_grid), n_jobs=n_jobs,
    )  # fmt: skip
    if len(x) != len(table):
        raise BadInputError(f"{len(x)} embeddings for {len(table)} manifest rows")
    split = _splits(table)
    task_name, y, names, n_dropped = prepare_targets(table, config.findings, config.task)
    train, val, test = (split == s for s in ("train", "val", "test"))
    fitted = fit_probes(
        x[train], y[train], task=task_name, names=names, protocol=config.protocol,
        x_val=x[val], y_val=y[val], c_grid=config.c_grid, n_jobs=config.n_jobs,
    )  # fmt: skip
    scores = fitted.predict(x)
    counts = _split_counts(table, {"train": train, "val": val, "test": test}) | {"n_rows_without_class": n_dropped}
    test_metrics = _evaluate(task_name, y[test], scores[test], names, fitted.skipped)
    if config.bootstrap:
        patients = table.loc[test, "patient_id"].to_numpy()
        test_metrics = _with_bootstrap(
            test_metrics, task_name, y[test], scores[test], names, fitted.skipped, patients,
            config.bootstrap, config.seed,
        )  # fmt: skip
    val_metrics = _evaluate(task_name, y[val], scores[val], names, fitted.skipped) if val.any() else None
    return ProbeResult(
        config=config.to_dict() | {"protocol": protocol_name(config.protocol)},
        task=task_name,
        names=names,
        test=test_metrics,
        val=val_metrics,
        skipped=fitted.skipped,
        chosen_c=fitted.chosen_c,
        counts=counts,
        val_macro_auroc_by_c={f"{c:g}": v for c, v in fitted.val_macro_auroc_by_c.items()},
        predictions=_predictions(table, split, task_name, y, scores, names, fitted.skipped),
        classification=_classification(y[test], scores[test], names) if task_name == "multiclass" else None,
    )


def _classification(y: np.ndarray, scores: np.ndarray, names: list[str]) -> dict[str, Any] | None:
    """Accuracy (arg-max class) and the confusion matrix over the test rows that have a class."""
    from sklearn.metrics import confusion_matrix

    rows = np.isfinite(y)
    if not rows.any():
        return None
    true, predicted = y[rows].astype(int), np.nan_to_num(scores[rows], nan=-np.inf).argmax(axis=1)
    matrix = confusion_matrix(true, predicted, labels=list(range(len(names))))
    correct = int((true == predicted).sum())
    return {"accuracy": correct / len(true), "correct": correct, "n": int(len(true)), "classes": list(names),
            "matrix": matrix.tolist()}  # fmt: skip


def probe(
    embeddings: str | Path | Embeddings,
    labels_manifest: str | Path | Manifest | pd.DataFrame,
    *,
    protocol: str = "retfound-green",
    findings: Sequence[str] | None = None,
    task: TaskName = "auto",
    bootstrap: int = 1000,
    seed: int = 0,
    out: str | Path | None = None,
) -> ProbeResult:
    """Join embeddings with a manifest on ``id``, fit on train, score val and test.

    Returns per-finding AUROC / AUPRC with patient-bootstrap CIs and their macro;
    with ``out`` writes ``probe.json`` and ``predictions.parquet`` there.
    """
    # validate the options before reading anything
    build_config(ProbeConfig, protocol=protocol, findings=findings, task=task, bootstrap=bootstrap, seed=seed)
    x, table, sources = load_probe_inputs(embeddings, labels_manifest)
    result = run_probe(x, table, findings=findings, protocol=protocol, task=task, bootstrap=bootstrap, seed=seed)
    result.sources = sources
    result.counts["n_unused_embeddings"] = sources["n_unused_embeddings"]
    if out is not None:
        result.save(out)
    return result


def load_probe_inputs(
    embeddings: str | Path | Embeddings, labels_manifest: str | Path | Manifest | pd.DataFrame
) -> tuple[np.ndarray, pd.DataFrame, dict[str, Any]]:
    """Read once, probe many times: (embedding rows aligned with the table, table, sources).

    Every manifest id needs an embedding; embeddings of other images are ignored and
    counted. Pass ``x`` and ``table`` to ``run_probe`` for each finding set, protocol
    or subset (e.g. label fractions) without touching the files again.
    """
    emb = embeddings if isinstance(embeddings, Embeddings) else read_embeddings(embeddings)
    if isinstance(labels_manifest, pd.DataFrame):
        missing = [c for c in ("id", "patient_id", "split") if c not in labels_manifest.columns]
        if missing:
            raise BadInputError(f"the label table lacks column(s) {missing}")
        table, source, manifest_hash = labels_manifest.copy(), None, None
        table["id"] = table["id"].astype(str)
    else:
        manifest = (
            labels_manifest if isinstance(labels_manifest, Manifest)
            else load_manifest(labels_manifest, check_files=False, skip_hint=NO_SKIP_HINT)
        )  # fmt: skip
        table, manifest_hash = manifest.table, manifest.hash
        source = str(manifest.source) if manifest.source else None
    x = align_embeddings(emb, table, source=source)
    sources = {
        "embeddings": None if isinstance(embeddings, Embeddings) else str(embeddings),
        "embeddings_metadata": emb.metadata,
        "manifest": source,
        "manifest_hash": manifest_hash,
        "n_unused_embeddings": len(emb) - len(table),
    }
    return x, table, sources


def prepare_targets(
    table: pd.DataFrame, findings: Sequence[str] | None, task: TaskName
) -> tuple[str, np.ndarray, list[str], int]:
    """(task, y, names, rows without a class): y is (N,) class indices or (N, K) labels.

    ``auto``: one column holding integers beyond 0/1 is multi-class; one column is
    binary; several columns are multi-class when every row is one-hot (the rule
    fine-tuning uses, ``greenfm.data.tasks.is_one_hot``), else multi-label.
    ``multiclass`` over several columns reads them as one-hot: a row with exactly one 1
    has that class, any other row none.
    """
    available = finding_columns(table)
    names = list(findings) if findings else available
    unknown = [f for f in names if f not in table.columns]
    if unknown:
        raise BadInputError(f"finding(s) {unknown} not in the manifest; it has {available}")
    if not names:
        raise BadInputError("the manifest has no finding columns to probe")
    values = table[names].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    labelled = np.isfinite(values) & (values >= 0)
    if task == "auto":
        multi_valued = len(names) == 1 and np.isin(values[labelled], [0, 1], invert=True).any()
        if multi_valued or is_one_hot(values):
            task = "multiclass"
        else:
            task = "binary" if len(names) == 1 else "multilabel"
    if task in ("binary", "multilabel"):
        if task == "binary" and len(names) != 1:
            raise BadInputError(f"task 'binary' needs one finding, got {len(names)}: {names}")
        odd = np.isfinite(values) & ~np.isin(values, [0, 1, -1])
        if odd.any():
            raise BadInputError(f"{task} labels must be 1, 0, -1 or empty; found {np.unique(values[odd])[:5]}")
        return task, values, names, 0
    if len(names) == 1:
        classes = np.unique(values[labelled])
        if (classes != np.round(classes)).any():
            raise BadInputError(f"multi-class labels of {names[0]!r} must be integers, found {classes[:5]}")
        y = np.full(len(table), np.nan)
        y[labelled[:, 0]] = np.searchsorted(classes, values[labelled[:, 0], 0])
        return task, y, [f"{names[0]}={c:g}" for c in classes], int((~labelled[:, 0]).sum())
    ones = values == 1
    y = np.where(ones.sum(axis=1) == 1, ones.argmax(axis=1), np.nan)
    return task, y, names, int(np.isnan(y).sum())


def _fit_path(x: np.ndarray, y: np.ndarray, grid: Sequence[float]) -> list[Pipeline]:
    """One scaler -> logistic-regression pipeline per C, warm-started along the grid."""
    scaler = StandardScaler().fit(x)
    z = scaler.transform(x)
    logreg = LogisticRegression(C=grid[0], max_iter=20000, random_state=42, warm_start=len(grid) > 1)
    path = []
    for c in grid:
        logreg.set_params(C=c).fit(z, y)
        path.append(Pipeline([("standardscaler", scaler), ("logisticregression", copy.deepcopy(logreg))]))
    return path


def _val_macro_by_c(paths, grid, task, names, skipped, x_val, y_val) -> dict[float, float | None]:
    """Macro validation AUROC of each C (models already fitted along the grid)."""
    by_c = {}
    for i, c in enumerate(grid):
        fitted = FittedProbes(task, names, {n: p[i] for n, p in paths.items()}, skipped, c)
        by_c[c] = _evaluate(task, y_val, fitted.predict(x_val), names, skipped).macro_auroc
    return by_c


def _columns(task: str, y: np.ndarray, scores: np.ndarray, names: list[str], skipped: dict[str, str]) -> BinaryColumns:
    """Binary columns with NaN targets for columns that have no model (never scored)."""
    if task == "multiclass":
        targets = (y[:, None] == np.arange(len(names))[None, :]).astype(float)
        targets[~np.isfinite(y)] = np.nan
    else:
        targets = np.where(y == -1, np.nan, y).astype(float)
    targets[:, [j for j, n in enumerate(names) if n in skipped]] = np.nan
    return BinaryColumns(targets, np.nan_to_num(scores), list(names), task)


def _evaluate(task, y, scores, names, skipped) -> Metrics:
    metrics = score_columns(_columns(task, y, scores, names, skipped))
    full = score_columns(_columns(task, y, scores, names, {}))  # test counts of skipped columns
    for j, name in enumerate(names):
        if name in skipped:
            f = full.findings[j]
            metrics.findings[j] = FindingMetrics(name, f.n, f.n_positive, f.prevalence, None, None, skipped[name])
    return metrics


def _with_bootstrap(metrics, task, y, scores, names, skipped, patient_ids, n_resamples, seed) -> Metrics:
    counts = patient_resample_counts(patient_ids, n_resamples, seed)
    auroc, auprc = bootstrap_columns(_columns(task, y, scores, names, skipped), counts)
    info = BootstrapInfo(n_resamples, seed, 0.95, "patient", len(np.unique(patient_ids.astype(str))))
    return attach_intervals(metrics, auroc, auprc, info)


def _splits(table: pd.DataFrame) -> np.ndarray:
    """Normalised split per row ('' = none); requires train and test, no leaking patient."""
    if "split" not in table.columns:
        raise BadInputError("the manifest has no 'split' column; run `greenfm data split` first")
    split = table["split"].astype("string").str.strip().str.lower().fillna("").to_numpy(dtype=str)
    split = np.where(np.isin(split, ["valid", "validation"]), "val", split)
    for needed in ("train", "test"):
        if not (split == needed).any():
            found = ", ".join(sorted(str(s) for s in set(split) - {""})) or "none"
            raise BadInputError(f"the manifest has no '{needed}' split (splits found: {found})")
    assert_no_patient_leakage(table.assign(split=np.where(split == "", None, split)))
    return split


def _split_counts(table: pd.DataFrame, masks: dict[str, np.ndarray]) -> dict[str, int]:
    counts = {f"n_{name}_images": int(mask.sum()) for name, mask in masks.items()}
    counts |= {f"n_{name}_patients": int(table.loc[mask, "patient_id"].nunique()) for name, mask in masks.items()}
    counts["n_rows_without_split"] = int(len(table) - sum(counts[f"n_{name}_images"] for name in masks))
    return counts


def _predictions(table, split, task, y, scores, names, skipped) -> pd.DataFrame:
    """Long table of val/test scores: id, patient_id, split, finding, label, score."""
    rows = np.flatnonzero(np.isin(split, ["val", "test"]))
    columns = _columns(task, y[rows], scores[rows], names, {})
    frames = [
        pd.DataFrame(
            {
                "id": table["id"].to_numpy()[rows].astype(str),
                "patient_id": table["patient_id"].to_numpy()[rows].astype(str),
                "split": split[rows],
                "finding": name,
                "label": columns.targets[:, j],
                "score": columns.scores[:, j],
            }
        )
        for j, name in enumerate(names)
        if name not in skipped
    ]
    return pd.concat(frames, ignore_index=True)
