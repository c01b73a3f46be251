"""A scaling study's results from its finished cells: curves, fits, compute and paired differences.

* **points**: one row per (recipe, evaluation, size), the init as n = 0, with the metric's
  patient-bootstrap 95% CI and the cell's compute from its ledger (``compute.json``);
* **fits**: ``metric(n) = a - b * n^(-c)`` per (recipe, evaluation) with four or more sizes
  (``greenfm.evaluate.scaling_fit``), its CIs refitted on shared patient resamples;
* **pairs**: paired patient-bootstrap differences (``greenfm.evaluate.paired.paired_comparison``,
  as ``greenfm evaluate compare``) between recipes at each size (first listed minus the
  other), between consecutive sizes of one recipe, and between each size and the init;
* **orderings**: METHODS 5.3's three expected orderings, each read from those paired CIs.

Written to ``scaling.json`` (schema ``greenfm.scaling/1``, what ``greenfm report`` reads) and
``scaling_points.csv``, ``scaling_fits.csv``, ``scaling_pairs.csv``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from greenfm.errors import BadInputError
from greenfm.evaluate.bootstrap import patient_resample_counts
from greenfm.evaluate.metrics import json_safe
from greenfm.evaluate.paired import macro_on_resamples, paired_comparison, scored_split, verdict
from greenfm.evaluate.scaling_fit import fit_power_law

SCHEMA = "greenfm.scaling/1"
INIT = "init"


def collect_points(out: Path, records: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per (recipe, evaluation, size) with its CI, training steps and ledger figures."""
    trained = {(r["recipe"], r["size"]): r for r in records.values() if r.get("kind") == "pretrain"}
    rows = []
    for record in records.values():
        if record.get("kind") != "evaluation":
            continue
        cell = trained.get((record["recipe"], record["size"]), {})
        compute = cell.get("compute", {})
        flops = compute.get("total_training_flops")
        for point in record["points"]:
            rows.append({
                "recipe": record["recipe"], "evaluation": point["evaluation"], "size": record["size"],
                "images": record["images"], "patients": record["patients"],
                "requested": ",".join(str(n) for n in record.get("requested", [])),
                "value": point["value"], "ci_low": point["ci_low"], "ci_high": point["ci_high"],
                "n_evaluable": point.get("n_evaluable"), "n_classes": point.get("n_classes"),
                "steps": cell.get("steps", 0), "batch_size": cell.get("batch_size"), "epochs": cell.get("epochs", 0.0),
                "training_flops": 0.0 if record["size"] == INIT else (flops if isinstance(flops, (int, float)) else None),
                "wall_time_s": compute.get("wall_time_s"), "device_hours": compute.get("device_hours"),
                "energy_kwh": compute.get("energy_kwh") if isinstance(compute.get("energy_kwh"), (int, float)) else None,
                "predictions": point.get("predictions"),
            })  # fmt: skip
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    return table.sort_values(["evaluation", "recipe", "images"], kind="stable").reset_index(drop=True)


class _Predictions:
    """Predictions files of a study, read once each."""

    def __init__(self, root: Path):
        self.root, self._seen = root, {}

    def __call__(self, relative: str | None) -> pd.DataFrame | None:
        if not relative:
            return None
        if relative not in self._seen:
            path = self.root / relative
            self._seen[relative] = pd.read_parquet(path) if path.is_file() else None
        return self._seen[relative]


def fit_curves(points: pd.DataFrame, predictions: _Predictions, *, n_resamples: int, seed: int) -> list[dict[str, Any]]:
    """The power law per (recipe, evaluation), with CIs from curves refitted on shared patient resamples."""
    fits = []
    for (evaluation, recipe), group in points.groupby(["evaluation", "recipe"], sort=False):
        sized = group[(group["size"] != INIT) & group["value"].notna()].sort_values("images")
        resampled = _resampled_curve(sized, predictions, n_resamples, seed) if n_resamples else None
        fit = fit_power_law(sized["images"].to_numpy(), sized["value"].to_numpy(dtype=float), resampled)
        fits.append({"recipe": recipe, "evaluation": evaluation, **fit.to_dict(), "law": "a - b * n^(-c)",
                     "describe": fit.describe()})  # fmt: skip
    return fits


def _resampled_curve(sized: pd.DataFrame, predictions: _Predictions, n_resamples: int, seed: int) -> np.ndarray | None:
    """(R, K) macro AUROC of each size on the same R patient resamples of the test set (None if not shared)."""
    scored = [predictions(p) for p in sized["predictions"]]
    if len(scored) < 4 or any(s is None for s in scored):
        return None
    try:
        splits = [scored_split(s, "test") for s in scored]
    except BadInputError:
        return None
    if any(not s.ids.equals(splits[0].ids) for s in splits):
        return None
    counts = patient_resample_counts(splits[0].patients, n_resamples, seed)
    try:
        return np.stack([macro_on_resamples(s, counts)[1] for s in splits], axis=1)
    except BadInputError:
        return None


def paired_rows(points: pd.DataFrame, recipes: list[str], predictions: _Predictions, *, n_resamples: int,
                seed: int) -> list[dict[str, Any]]:  # fmt: skip
    """B - A with paired patient-bootstrap CIs: recipes at each size, consecutive sizes, each size vs the init."""
    rows = []
    index = {(r.recipe, r.evaluation, r.size): r for r in points.itertuples(index=False)}

    def compare(kind: str, b, a, label: str) -> None:
        pa, pb = predictions(a.predictions), predictions(b.predictions)
        if pa is None or pb is None:
            return
        try:
            result = paired_comparison(pa, pb, model_a=label.split(" - ")[1], model_b=label.split(" - ")[0],
                                       n_resamples=n_resamples, seed=seed, wilcoxon=False)  # fmt: skip
            macro = result.macro
        except (BadInputError, StopIteration):
            return
        rows.append({"kind": kind, "evaluation": b.evaluation, "recipe": b.recipe if kind != "recipes" else None,
                     "comparison": label, "size": b.size, "images": int(b.images), "size_a": a.size,
                     "images_a": int(a.images), "value_b": macro.auroc_b, "value_a": macro.auroc_a,
                     "difference": macro.difference,
                     "ci_low": macro.difference_ci[0] if macro.difference_ci else None,
                     "ci_high": macro.difference_ci[1] if macro.difference_ci else None,
                     "p_bootstrap": macro.p_bootstrap, "verdict": _verdict(macro.difference_ci),
                     "n_test_patients": result.n_patients})  # fmt: skip

    evaluations = list(dict.fromkeys(points["evaluation"]))
    for evaluation in evaluations:
        sizes = (points[(points["evaluation"] == evaluation) & (points["size"] != INIT)]
                 .drop_duplicates("size").sort_values("images")["size"].tolist())  # fmt: skip
        present = [r for r in recipes if any(key[:2] == (r, evaluation) for key in index)]
        for first, second in combinations(present, 2):
            for size in sizes:
                b, a = index.get((first, evaluation, size)), index.get((second, evaluation, size))
                if a is not None and b is not None:
                    compare("recipes", b, a, f"{first} - {second}")
        for recipe in present:
            cells = [index[(recipe, evaluation, s)] for s in sizes if (recipe, evaluation, s) in index]
            for a, b in zip(cells, cells[1:]):
                compare("next-size", b, a, f"{recipe} {b.size} - {recipe} {a.size}")
            init = index.get((recipe, evaluation, INIT))
            if init is not None:
                for b in cells:
                    compare("vs-init", b, init, f"{recipe} {b.size} - {recipe} init")
    return rows


def _verdict(ci) -> str:
    return {"b better": "higher", "a better": "lower", "no clear difference": "no clear difference"}.get(
        verdict(tuple(ci) if ci else None), "not evaluable")


def orderings(pairs: list[dict[str, Any]], recipes: list[str]) -> list[dict[str, Any]]:
    """METHODS 5.3's expected orderings, each as counts of paired-CI verdicts and the rows behind them."""
    table = pd.DataFrame(pairs)
    if table.empty:
        return []
    out = []

    def summarise(name: str, rows: pd.DataFrame, expectation: str) -> None:
        for evaluation, group in rows.groupby("evaluation", sort=False):
            summarise_one(name, evaluation, group, expectation)

    def summarise_one(name: str, evaluation: str, rows: pd.DataFrame, expectation: str) -> None:
        counts = rows["verdict"].value_counts().to_dict()
        lower = int(counts.get("lower", 0))
        holds = "contradicted" if lower else ("supported" if counts.get("higher", 0) == len(rows) else "not contradicted")
        out.append({"ordering": name, "evaluation": evaluation, "expectation": expectation, "comparisons": len(rows),
                    "higher": int(counts.get("higher", 0)), "no_clear_difference": int(counts.get("no clear difference", 0)),
                    "lower": lower, "holds": holds,
                    "rows": rows[["comparison", "evaluation", "difference", "ci_low", "ci_high"]].to_dict("records")})  # fmt: skip

    for recipe in recipes:
        steps = table[(table["kind"] == "next-size") & (table["recipe"] == recipe)]
        summarise(f"{recipe}: non-decreasing in n", steps, "each size >= the next smaller size")
        first = table[(table["kind"] == "vs-init") & (table["recipe"] == recipe)]
        if not first.empty:
            smallest = first[first["images"] == first["images"].min()]
            summarise(f"{recipe}: smallest n >= init", smallest, "the model at the smallest size >= its init")
    for first, second in combinations(recipes, 2):
        rows = table[(table["kind"] == "recipes") & (table["comparison"] == f"{first} - {second}")]
        summarise(f"{first} >= {second} at matched n", rows, f"{first} - {second} >= 0 at every size")
    return out


def write_results(out: Path, records: dict[str, dict[str, Any]], config: Any, plan: Any, *,
                  notes: Iterable[str] = ()) -> dict[str, Any]:  # fmt: skip
    """Compute points, fits, pairs and orderings from the finished cells and write them to ``out``."""
    study = json.loads((out / "scaling_study.json").read_text()) if (out / "scaling_study.json").is_file() else {}
    recipes = list(dict.fromkeys([*study.get("recipes", []), *config.recipe]))
    points = collect_points(out, records)
    predictions = _Predictions(out)
    fits = fit_curves(points, predictions, n_resamples=config.fit_resamples, seed=config.bootstrap_seed) if len(points) else []
    pairs = paired_rows(points, recipes, predictions, n_resamples=config.bootstrap,
                        seed=config.bootstrap_seed) if len(points) else []  # fmt: skip
    result = {
        "schema": SCHEMA, "recipes": recipes, "notes": list(notes), "steps": config.steps,
        "subsets": [s.to_dict() for s in plan.subsets], "total_images": plan.total_images,
        "subset_seed": plan.seed, "bootstrap": {"resamples": config.bootstrap, "seed": config.bootstrap_seed,
                                                "cluster": "patient", "level": 0.95},
        "points": points.to_dict("records"), "fits": fits, "pairs": pairs, "orderings": orderings(pairs, recipes),
    }  # fmt: skip
    (out / "scaling.json").write_text(json.dumps(json_safe(result), indent=2) + "\n")
    points.to_csv(out / "scaling_points.csv", index=False)
    pd.DataFrame([{k: v for k, v in f.items() if k != "describe"} for f in fits]).to_csv(out / "scaling_fits.csv", index=False)
    pd.DataFrame(pairs).to_csv(out / "scaling_pairs.csv", index=False)
    return {**result, "table": points_table(points, fits)}


def points_table(points: pd.DataFrame, fits: list[dict[str, Any]]) -> str:
    """Plain text: per evaluation and recipe, the metric at each size with its CI, then the fit."""
    if points.empty:
        return "no finished evaluation yet"
    lines = []
    laws = {(f["recipe"], f["evaluation"]): f["describe"] for f in fits}
    for (evaluation, recipe), group in points.groupby(["evaluation", "recipe"], sort=False):
        cells = [f"{r.size} {_fmt(r.value)}{_ci(r.ci_low, r.ci_high)}" for r in group.itertuples()]
        lines.append(f"{evaluation:<24} {recipe:<22} " + "; ".join(cells))
        lines.append(f"{'':<24} {'':<22} fit: {laws.get((recipe, evaluation), 'n/a')}")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{value:.3f}"


def _ci(low: Any, high: Any) -> str:
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return ""
    return f" [{low:.3f}, {high:.3f}]"
