"""``compare_studies``: two label-efficiency studies paired cell by cell on shared patient resamples."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from greenfm.errors import BadInputError
from greenfm.models import create_encoder, export_encoder
from greenfm.workflows.label_efficiency import run_label_efficiency
from greenfm.workflows.study_comparison import compare_studies

STUDY = {"backbone": "vit_tiny_test", "fractions": (0.3, 1.0), "seeds": (0, 1), "modes": ("linear",),
         "bootstrap": 50}  # fmt: skip


@pytest.fixture(scope="module")
def studies(phantom_split, cache_root, tmp_path_factory):
    """``a`` and ``a_again``: the same random init; ``other``: another init; ``one_seed``: ``other`` on seed 0 only."""
    root = tmp_path_factory.mktemp("studies")
    torch.manual_seed(5)
    other_model = export_encoder(create_encoder("vit_tiny_test"), root / "other_model")

    def study(name, model, **options):
        run_label_efficiency(model=model, data=phantom_split, out=root / name, cache=cache_root,
                             echo=lambda _: None, **{**STUDY, **options})  # fmt: skip
        return root / name

    made = {"a": study("a", "random"), "a_again": study("a_again", "random"),
            "other": study("other", str(other_model)), "one_seed": study("one_seed", str(other_model), seeds=(0,))}  # fmt: skip
    return made


def _macro(study_rows, mode, fraction):
    rows = study_rows[(study_rows["finding"] == "macro") & (study_rows["mode"] == mode)
                      & (study_rows["fraction"] == fraction)]  # fmt: skip
    return rows.sort_values("seed")["auroc"].to_numpy()


def test_a_study_compared_with_its_rerun_differs_by_exactly_nothing(studies):
    comparison = compare_studies(studies["a"], studies["a_again"], n_resamples=200)
    assert [(r.mode, r.fraction, r.seeds) for r in comparison.rows] == [
        ("linear-probe", 0.3, [0, 1]), ("linear-probe", 1.0, [0, 1])
    ]  # fmt: skip
    for row in comparison.rows:
        assert row.difference == 0 and row.difference_ci == (0.0, 0.0) and row.verdict == "no clear difference"
    assert not comparison.unpaired


def test_the_difference_is_the_seed_mean_of_each_studys_own_macro_auroc(studies):
    import pandas as pd

    rows_a = pd.read_csv(studies["a"] / "label_efficiency.csv")
    rows_b = pd.read_csv(studies["other"] / "label_efficiency.csv")
    comparison = compare_studies(studies["a"], studies["other"], name_a="random", name_b="other", n_resamples=300)
    for row in comparison.rows:
        a, b = _macro(rows_a, row.mode, row.fraction), _macro(rows_b, row.mode, row.fraction)
        assert row.auroc_a == pytest.approx(a.mean()) and row.auroc_b == pytest.approx(b.mean())
        assert row.seed_differences == pytest.approx(list(b - a))
        assert row.difference == pytest.approx((b - a).mean())
        low, high = row.difference_ci
        assert low < high and row.seed_sd == pytest.approx(np.std(b - a, ddof=1))
    assert "random" in comparison.table() and "paired 95% CI" in comparison.table()


def test_cells_only_one_study_finished_are_listed_not_paired(studies, tmp_path):
    comparison = compare_studies(studies["a"], studies["one_seed"], n_resamples=100)
    assert all(row.seeds == [0] for row in comparison.rows)
    assert len(comparison.unpaired) == 2 and all("seed 1: only in A" in u for u in comparison.unpaired)
    files = comparison.save(tmp_path / "cmp")
    assert len(open(files["csv"]).read().splitlines()) == 3 and files["json"].stat().st_size > 0


def test_a_study_without_predictions_or_results_is_refused(studies, tmp_path):
    with pytest.raises(BadInputError, match="not a label-efficiency study"):
        compare_studies(studies["a"], tmp_path)
    damaged = shutil.copytree(studies["one_seed"], tmp_path / "one_seed")
    (damaged / "runs" / "linear-probe-f1-s0" / "predictions.parquet").unlink()
    with pytest.raises(BadInputError, match="linear-probe 1 seed 0 kept no predictions"):
        compare_studies(studies["a"], damaged)


def test_the_cli_prints_the_table_and_writes_both_files(studies, tmp_path, capsys):
    from greenfm.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "compare", str(studies["a"]), str(studies["other"]), "--name-a", "start", "--name-b",
              "adapted", "--bootstrap", "100", "--out", str(tmp_path / "cmp")])  # fmt: skip
    assert not exit_info.value.code
    out = capsys.readouterr().out
    assert "A = start" in out and "linear-probe" in out and "study_comparison.csv" in out
    assert (tmp_path / "cmp" / "study_comparison.json").is_file()


def test_one_seed_gives_the_demos_paired_patient_bootstrap(studies):
    import pandas as pd

    from greenfm.evaluate.paired import paired_comparison

    comparison = compare_studies(studies["a"], studies["one_seed"], n_resamples=300, seed=4)
    row = next(r for r in comparison.rows if r.fraction == 1.0)
    cell = "runs/linear-probe-f1-s0/predictions.parquet"
    paired = paired_comparison(pd.read_parquet(studies["a"] / cell), pd.read_parquet(studies["one_seed"] / cell),
                               n_resamples=300, seed=4, wilcoxon=False).macro  # fmt: skip
    assert row.difference == pytest.approx(paired.difference) and row.difference_ci == pytest.approx(paired.difference_ci)


def test_studies_of_different_manifests_do_not_pair(studies, phantom_split, cache_root, tmp_path):
    import pandas as pd

    table = pd.read_csv(phantom_split)
    other = table[table["patient_id"] != table.loc[table["split"] == "train", "patient_id"].iloc[0]]
    other = other.assign(path=[str((phantom_split.parent / p).resolve()) for p in other["path"]])  # moved manifest
    other.to_csv(tmp_path / "other.csv", index=False)  # one training patient fewer: other subsets
    run_label_efficiency(model="random", data=tmp_path / "other.csv", out=tmp_path / "study", cache=cache_root,
                         echo=lambda _: None, **{**STUDY, "seeds": (0,)})  # fmt: skip
    with pytest.raises(BadInputError, match="no cell .* pairs"):
        compare_studies(studies["a"], tmp_path / "study")


def test_cells_that_trained_fewer_findings_still_pair(studies, tmp_path):
    import pandas as pd

    copies = [shutil.copytree(studies[name], tmp_path / name) for name in ("a", "a_again")]
    for folder in copies:  # as when a small subset leaves one finding without positives
        cell = folder / "runs" / "linear-probe-f0.3-s1" / "predictions.parquet"
        predictions = pd.read_parquet(cell)
        dropped = predictions["finding"].iloc[0]
        predictions[predictions["finding"] != dropped].to_parquet(cell, index=False)
    comparison = compare_studies(*copies, n_resamples=100)
    assert not comparison.unpaired and all(row.difference == 0 for row in comparison.rows)


def test_bad_options_and_damaged_cells_are_named(studies, tmp_path):
    from greenfm.errors import ConfigError

    with pytest.raises(ConfigError, match="at least one bootstrap resample"):
        compare_studies(studies["a"], studies["a_again"], n_resamples=0)
    damaged = shutil.copytree(studies["a_again"], tmp_path / "damaged")
    (damaged / "runs" / "linear-probe-f1-s1" / "predictions.parquet").write_bytes(b"not parquet")
    with pytest.raises(BadInputError, match="cell linear-probe 1 seed 1: unreadable predictions"):
        compare_studies(studies["a"], damaged)
