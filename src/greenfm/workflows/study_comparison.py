"""Two label-efficiency studies of one data set compared cell by cell: is model B better than A?

The usual question after continual pretraining: does the adapted model beat its
starting model once both are probed and fine-tuned the same way? Two studies made
by ``greenfm evaluate label-efficiency`` on the same manifest with the same seeds
train every (mode, fraction, seed) cell on the same patients, so their test
predictions pair up. For each (mode, fraction):

- each seed's macro AUROC of A and of B is bootstrapped on *one* set of test-patient
  resamples (``n_resamples``, ``seed``), the same for every cell, giving per resample
  and seed a paired difference B - A;
- each resample also draws the seeds both studies finished, with replacement, and
  averages their differences: the percentile interval of those means is the 95% CI
  of the mean difference over seeds. It covers both the test set (patients) and
  training (seeds); with one seed it is the plain paired patient bootstrap. With the
  usual 2-3 seeds the seed part is coarse and, like any bootstrap of S values,
  understates the spread by a factor of about (S - 1) / S in variance, so the spread
  of the per-seed differences is reported beside it (``seed_sd``);
- ``p_bootstrap`` is the two-sided bootstrap p of no difference.

Each cell's val/test scores are read from ``runs/<cell>/predictions.parquet``,
which every cell of a study writes. Nothing is recomputed. The statistics live in
``greenfm.evaluate.paired``; this module reads the two studies and writes the result.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from greenfm.errors import BadInputError, ConfigError
from greenfm.evaluate.bootstrap import patient_resample_counts
from greenfm.evaluate.metrics import clip, json_safe
from greenfm.evaluate.paired import (
    ScoredSplit,
    check_same_images,
    macro_on_resamples,
    scored_split,
    seed_averaged_difference,
    verdict,
)
from greenfm.workflows.label_efficiency_results import JSON_FILE, PLANS

COMPARISON_JSON, COMPARISON_CSV = "study_comparison.json", "study_comparison.csv"


@dataclass
class CellDifference:
    """One (mode, fraction): both studies' mean macro AUROC over common seeds and the paired difference."""

    mode: str
    fraction: float
    seeds: list[int]
    n_train_images: float
    auroc_a: float
    auroc_b: float
    difference: float
    difference_ci: tuple[float, float] | None
    p_bootstrap: float
    seed_differences: list[float]

    @property
    def seed_sd(self) -> float | None:
        return float(np.std(self.seed_differences, ddof=1)) if len(self.seed_differences) > 1 else None

    @property
    def verdict(self) -> str:
        return verdict(self.difference_ci)


@dataclass
class StudyComparison:
    """Every (mode, fraction) both studies finished, and what could not be paired."""

    study_a: str
    study_b: str
    name_a: str
    name_b: str
    rows: list[CellDifference]
    n_resamples: int
    seed: int
    n_test_images: int
    n_test_patients: int
    unpaired: list[str] = field(default_factory=list)

    def table(self) -> str:
        """Plain text, one line per (mode, fraction)."""
        head = (f"{'mode':<15}{'fraction':>9}{'seeds':>6}{'images':>8}{clip(self.name_a, 12):>13}{clip(self.name_b, 12):>13}"
                f"{'B - A':>8}{'paired 95% CI':>19}{'seed sd':>9}  verdict")  # fmt: skip
        lines = [f"A = {self.name_a} ({self.study_a})", f"B = {self.name_b} ({self.study_b})", head]
        for r in self.rows:
            ci = f"[{r.difference_ci[0]:+.3f}, {r.difference_ci[1]:+.3f}]" if r.difference_ci else ""
            sd = f"{r.seed_sd:.3f}" if r.seed_sd is not None else ""
            lines.append(f"{r.mode:<15}{r.fraction:>9g}{len(r.seeds):>6}{r.n_train_images:>8.0f}{r.auroc_a:>13.3f}"
                         f"{r.auroc_b:>13.3f}{r.difference:>+8.3f}{ci:>19}{sd:>9}  {r.verdict}")  # fmt: skip
        lines.append(f"macro AUROC on {self.n_test_images} test images of {self.n_test_patients} patients; "
                     f"{self.n_resamples} shared patient resamples (seed {self.seed})")  # fmt: skip
        if self.unpaired:
            lines.append(f"{len(self.unpaired)} cell(s) not paired: " + "; ".join(self.unpaired))
        return "\n".join(lines)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([
            {"mode": r.mode, "fraction": r.fraction, "n_seeds": len(r.seeds), "n_train_images": r.n_train_images,
             "auroc_a": r.auroc_a, "auroc_b": r.auroc_b, "difference": r.difference,
             "ci_low": r.difference_ci[0] if r.difference_ci else np.nan,
             "ci_high": r.difference_ci[1] if r.difference_ci else np.nan,
             "seed_sd": r.seed_sd, "p_bootstrap": r.p_bootstrap, "verdict": r.verdict}
            for r in self.rows
        ])  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        rows = [asdict(r) | {"seed_sd": r.seed_sd, "verdict": r.verdict} for r in self.rows]
        return json_safe(asdict(self) | {"rows": rows, "level": 0.95, "cluster": "patient"})

    def save(self, out: str | Path) -> dict[str, Path]:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        files = {"json": out / COMPARISON_JSON, "csv": out / COMPARISON_CSV}
        files["json"].write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        self.to_frame().to_csv(files["csv"], index=False)
        return files


def compare_studies(
    study_a: str | Path,
    study_b: str | Path,
    *,
    name_a: str | None = None,
    name_b: str | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> StudyComparison:
    """Pair the cells of two label-efficiency studies (see the module doc)."""
    if n_resamples < 1:
        raise ConfigError(f"the comparison needs at least one bootstrap resample, not {n_resamples}")
    study_a, study_b = Path(study_a), Path(study_b)
    cells_a, plans_a = _read_study(study_a)
    cells_b, plans_b = _read_study(study_b)

    groups: dict[tuple[str, float], list[int]] = {}
    unpaired = []
    for key in sorted(set(cells_a) | set(cells_b)):
        mode, fraction, cell_seed = key
        if key not in cells_a or key not in cells_b:
            unpaired.append(f"{mode} {fraction:g} seed {cell_seed}: only in {'A' if key in cells_a else 'B'}")
        elif not _same_subset(plans_a, plans_b, fraction, cell_seed):
            unpaired.append(f"{mode} {fraction:g} seed {cell_seed}: the studies drew different training subsets")
        else:
            groups.setdefault((mode, fraction), []).append(cell_seed)
    if not groups:
        raise BadInputError(f"no cell of {study_a} pairs with one of {study_b}: " + "; ".join(unpaired[:3]))

    first = next(iter(groups.items()))
    reference = _scores(study_a, cells_a[(*first[0], first[1][0])])
    counts = patient_resample_counts(reference.patients, n_resamples, seed)
    rows = []
    for (mode, fraction), seeds in groups.items():
        resampled_a, resampled_b = [], []
        for cell_seed in seeds:
            where = f"cell {mode} {fraction:g} seed {cell_seed}"
            a = _scores(study_a, cells_a[(mode, fraction, cell_seed)])
            b = _scores(study_b, cells_b[(mode, fraction, cell_seed)])
            try:
                # the shared resamples need the same test images and patients in every cell; the
                # findings may differ between cells (a small subset can leave one untrainable)
                if not (a.ids.equals(reference.ids) and np.array_equal(a.patients, reference.patients)):
                    raise BadInputError("its test images or patients differ from the other cells'")
                check_same_images(a, b)
                scored = macro_on_resamples(a, counts), macro_on_resamples(b, counts)
            except BadInputError as err:
                raise BadInputError(f"{where}: {err}", source=f"{study_a} vs {study_b}") from None
            resampled_a.append(scored[0])
            resampled_b.append(scored[1])
        paired = seed_averaged_difference(resampled_a, resampled_b, seed)
        rows.append(CellDifference(
            mode=mode, fraction=fraction, seeds=seeds,
            n_train_images=float(np.mean([cells_a[(mode, fraction, s)]["n_train_images"] for s in seeds])),
            **asdict(paired),
        ))  # fmt: skip
    return StudyComparison(
        study_a=str(study_a), study_b=str(study_b), name_a=name_a or study_a.name, name_b=name_b or study_b.name,
        rows=rows, n_resamples=n_resamples, seed=seed, n_test_images=len(reference.ids),
        n_test_patients=len(np.unique(reference.patients)), unpaired=unpaired,
    )  # fmt: skip


def _read_study(folder: Path) -> tuple[dict[tuple[str, float, int], dict[str, Any]], dict[str, Any]]:
    """The finished cells of a study keyed by (mode, fraction, seed), and its fraction plans by seed."""
    path = folder / JSON_FILE
    if not path.is_file():
        raise BadInputError(f"not a label-efficiency study (no {JSON_FILE})", source=str(folder))
    try:
        study = json.loads(path.read_text())
        cells = {(c["mode"], float(c["fraction"]), int(c["seed"])): c
                 for c in study["cells"].values() if c.get("status") == "done"}  # fmt: skip
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise BadInputError(f"unreadable study results ({exc})", source=str(path)) from None
    try:
        plans = json.loads((folder / PLANS).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInputError(f"unreadable fraction plans ({str(exc).splitlines()[0]})", source=str(folder / PLANS)) from None
    return cells, plans


def _same_subset(plans_a: dict[str, Any], plans_b: dict[str, Any], fraction: float, seed: int) -> bool:
    """Whether both studies trained this (fraction, seed) on the same training rows."""
    a, b = (plans.get(str(seed)) or {} for plans in (plans_a, plans_b))
    key = "ids" if a.get("ids") and b.get("ids") else "rows"  # ids when recorded: they survive a re-ordered manifest
    subset_a, subset_b = ((plan.get(key) or {}).get(str(float(fraction))) for plan in (a, b))
    return subset_a is not None and subset_a == subset_b


def _scores(folder: Path, cell: dict[str, Any]) -> ScoredSplit:
    run_dir = cell.get("run_dir")
    path = folder / run_dir / "predictions.parquet" if run_dir else None
    where = f"cell {cell['mode']} {cell['fraction']:g} seed {cell['seed']}"
    if path is None or not path.is_file():
        raise BadInputError(
            f"{where} kept no predictions (a study from an older greenfm, or files removed); "
            "run the study again into a new folder",
            source=str(folder),
        )
    try:
        return scored_split(pd.read_parquet(path), "test")
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{where}: unreadable predictions ({str(exc).splitlines()[0]})", source=str(path)) from None
    except BadInputError as err:
        raise BadInputError(f"{where}: {err}", source=str(path)) from None

