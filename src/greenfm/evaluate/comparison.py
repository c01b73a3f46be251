"""Comparing models the RETFound-Green way (METHODS 7.1 steps 4-5), and over seeds.

Every model is scored on the same 100 bootstrap resamples of the test set, drawn
image by image from a fresh ``np.random.RandomState(42)`` (as the official
evaluation does); the headline is each model's median AUROC. Resamples lacking a
class cannot be scored: they are skipped for every model alike and counted. The
top two models by median are compared with a Wilcoxon signed-rank test on their
paired bootstrap AUROCs: p < 0.05 is a win, otherwise a tie.

Bootstrap spread measures test-set variability only; ``seed_summary`` gives the
mean and spread over training seeds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy.stats import wilcoxon

from greenfm.errors import BadInputError
from greenfm.evaluate.bootstrap import bootstrap_columns, counts_from_indices
from greenfm.evaluate.metrics import Metrics, Task, binary_columns, json_safe

RFG_RESAMPLES = 100
RFG_SEED = 42
RFG_ALPHA = 0.05


@dataclass
class ModelBootstrap:
    """One model's AUROC on each kept resample and its median."""

    name: str
    median_auroc: float
    aurocs: list[float]


@dataclass
class Comparison:
    """Outcome of a RETFound-Green comparison of two or more models."""

    models: list[ModelBootstrap]  # best median first
    n_resamples: int
    n_skipped: int
    seed: int
    best: str
    runner_up: str | None
    p_value: float | None
    verdict: Literal["win", "tie", "only one model"]
    alpha: float = RFG_ALPHA

    def to_dict(self, *, include_samples: bool = False) -> dict[str, Any]:
        out = asdict(self)
        if not include_samples:
            for model in out["models"]:
                model.pop("aurocs")
        return json_safe(out)


def rfg_resample_indices(n_images: int, n_resamples: int = RFG_RESAMPLES, seed: int = RFG_SEED) -> np.ndarray:
    """(R, N) image indices: R successive ``choice(N, N, replace=True)`` from a fresh RandomState."""
    rng = np.random.RandomState(seed)
    return np.stack([rng.choice(n_images, size=n_images, replace=True) for _ in range(n_resamples)])


def rfg_bootstrap_aurocs(
    y_true: Any,
    y_score: Any,
    *,
    task: Task = "auto",
    n_resamples: int = RFG_RESAMPLES,
    seed: int = RFG_SEED,
) -> tuple[np.ndarray, np.ndarray]:
    """Macro AUROC per resample and a mask of resamples kept (every class present).

    For a multi-class task the macro AUROC of a resample equals
    ``roc_auc_score(y, proba, multi_class="ovr", average="macro")`` on it.
    """
    columns = binary_columns(y_true, y_score, task=task)
    labelled = np.isfinite(columns.targets).any(axis=1)
    if not labelled.all():
        # the official protocol drops unlabelled images before resampling
        columns.targets, columns.scores = columns.targets[labelled], columns.scores[labelled]
    n_images = columns.targets.shape[0]
    if n_images == 0:
        raise BadInputError("no labelled test images to bootstrap")
    counts = counts_from_indices(rfg_resample_indices(n_images, n_resamples, seed), n_images)
    auroc, _ = bootstrap_columns(columns, counts)
    kept = np.isfinite(auroc).all(axis=1)
    return np.where(kept, auroc.mean(axis=1), np.nan), kept


def rfg_compare(
    y_true: Any,
    scores: Mapping[str, Any],
    *,
    task: Task = "auto",
    n_resamples: int = RFG_RESAMPLES,
    seed: int = RFG_SEED,
    alpha: float = RFG_ALPHA,
) -> Comparison:
    """Median bootstrap AUROC per model and the Wilcoxon verdict for the top two.

    ``scores`` maps a model name to its test-set scores, (N,) for binary or (N, K)
    class probabilities; every model sees the same test labels and resamples.
    """
    if not scores:
        raise BadInputError("no models to compare")
    per_model, kept = {}, None
    for name, model_scores in scores.items():
        aurocs, model_kept = rfg_bootstrap_aurocs(y_true, model_scores, task=task, n_resamples=n_resamples, seed=seed)
        kept = model_kept if kept is None else kept & model_kept
        per_model[name] = aurocs
    if not kept.any():
        raise BadInputError(f"every one of {n_resamples} resamples lacks a class; the test set is too small")
    models = sorted(
        (ModelBootstrap(name, float(np.median(a[kept])), a[kept].tolist()) for name, a in per_model.items()),
        key=lambda m: -m.median_auroc,
    )
    best = models[0]
    runner_up = models[1] if len(models) > 1 else None
    p_value = None
    verdict: Literal["win", "tie", "only one model"] = "only one model"
    if runner_up is not None:
        p_value = _paired_wilcoxon(best.aurocs, runner_up.aurocs)
        verdict = "win" if p_value < alpha else "tie"
    return Comparison(
        models=models,
        n_resamples=n_resamples,
        n_skipped=int((~kept).sum()),
        seed=seed,
        best=best.name,
        runner_up=runner_up.name if runner_up else None,
        p_value=p_value,
        verdict=verdict,
        alpha=alpha,
    )


@dataclass
class SeedSummary:
    """Mean and spread of one metric over training seeds (sample std, ddof=1)."""

    n_seeds: int
    mean: float
    std: float | None
    min: float
    max: float
    values: dict[str, float]


def seed_summary(values: Mapping[Any, float] | Sequence[float]) -> SeedSummary:
    """Mean, std (None for one seed), min and max of a metric over training seeds."""
    if isinstance(values, Mapping):
        named = {str(k): float(v) for k, v in values.items()}
    else:
        named = {str(i): float(v) for i, v in enumerate(values)}
    arr = np.array(list(named.values()), dtype=float)
    if not len(arr) or not np.isfinite(arr).all():
        raise BadInputError(f"seed summary needs finite values, got {list(named.values())}")
    return SeedSummary(
        n_seeds=len(arr),
        mean=float(arr.mean()),
        std=float(arr.std(ddof=1)) if len(arr) > 1 else None,
        min=float(arr.min()),
        max=float(arr.max()),
        values=named,
    )


def seed_summaries(metrics_by_seed: Mapping[Any, Metrics], metric: str = "auroc") -> dict[str, SeedSummary]:
    """Per finding (and ``"macro"``): mean and spread of ``metric`` over training seeds.

    A finding not evaluable under some seed is summarised over the others
    (``n_seeds`` says how many); one never evaluable is left out.
    """
    if metric not in ("auroc", "auprc"):
        raise BadInputError(f"metric must be 'auroc' or 'auprc', got {metric!r}")
    values: dict[str, dict[str, float]] = {}
    for seed, metrics in metrics_by_seed.items():
        for f in metrics.evaluable:
            values.setdefault(f.name, {})[str(seed)] = getattr(f, metric)
        macro = getattr(metrics, f"macro_{metric}")
        if macro is not None:
            values.setdefault("macro", {})[str(seed)] = macro
    return {name: seed_summary(by_seed) for name, by_seed in values.items()}


def _paired_wilcoxon(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value; identical samples give 1.0 (no difference)."""
    diff = np.asarray(a) - np.asarray(b)
    if not np.any(diff != 0):
        return 1.0
    return float(wilcoxon(a, b).pvalue)
