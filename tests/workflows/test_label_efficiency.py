"""``run_label_efficiency``: the report's schema, nested counts, cell-by-cell resume, counted skips."""

from __future__ import annotations

import json
import shutil

import pytest

import greenfm.workflows.label_efficiency as le
from greenfm.errors import ConfigError
from greenfm.report.label_efficiency import curve_summary, read_label_efficiency

STUDY = {"model": "random", "backbone": "vit_tiny_test", "fractions": (0.3, 1.0), "seeds": (0,),
         "modes": ("linear", "lora"), "epochs": 1, "bootstrap": 50}  # fmt: skip


def _study(phantom_split, cache_root, out, **options):
    return le.run_label_efficiency(data=phantom_split, out=out, cache=cache_root, echo=lambda _: None,
                                   **{**STUDY, **options})  # fmt: skip


def test_study_writes_the_report_schema_with_nested_counts_and_resumes_cell_by_cell(
    phantom_split, cache_root, tmp_path, monkeypatch
):
    out = tmp_path / "study"
    real_finetune = le.finetune_and_score

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # the study is stopped during its first fine-tune

    monkeypatch.setattr(le, "finetune_and_score", crash)
    with pytest.raises(KeyboardInterrupt):
        _study(phantom_split, cache_root, out)
    finished = [json.loads(line)["key"] for line in (out / "cells.jsonl").read_text().splitlines()]
    assert finished == ["linear-probe|0.3|0"]  # the probe cell before it was kept

    monkeypatch.setattr(le, "finetune_and_score", real_finetune)
    result = _study(phantom_split, cache_root, out)
    assert (result.cells_run, result.cells_reused) == (3, 1)

    rows = read_label_efficiency(out / "label_efficiency.csv")  # the report's reader validates the schema
    assert read_label_efficiency(out / "label_efficiency.json").shape == rows.shape
    macro = rows[rows["finding"] == "macro"]
    assert sorted(zip(macro["mode"], macro["fraction"])) == [
        ("linear-probe", 0.3), ("linear-probe", 1.0), ("lora", 0.3), ("lora", 1.0)
    ]  # fmt: skip
    assert macro["auroc"].notna().all()
    assert ((macro["ci_low"] <= macro["auroc"]) & (macro["auroc"] <= macro["ci_high"])).all()
    assert set(rows["finding"]) - {"macro"} == set(result.rows["finding"]) - {"macro"}

    counts = macro.groupby("fraction")[["n_train_images", "n_train_patients"]].agg(["min", "max"])
    for column in ("n_train_images", "n_train_patients"):  # every mode trains on the same subset
        assert (counts[(column, "min")] == counts[(column, "max")]).all()
        small, full = counts[(column, "min")].loc[0.3], counts[(column, "min")].loc[1.0]
        assert 0 < small < full
    plan = json.loads((out / "fraction_plans.json").read_text())["0"]
    assert set(plan["ids"]["0.3"]) < set(plan["ids"]["1.0"])  # nested

    summary = curve_summary(rows)
    assert len(summary) == len(result.summary) == 4 and (out / "label_efficiency.png").stat().st_size > 1000
    assert "linear-probe" in result.table() and not (out / "runs" / "lora-f1-s0" / "checkpoints").exists()

    cells = (out / "cells.jsonl").read_text().splitlines()  # forget one fine-tuned cell: it is redone identically
    (out / "cells.jsonl").write_text("\n".join(c for c in cells if '"lora|1|0"' not in c) + "\n")
    shutil.rmtree(out / "runs" / "lora-f1-s0")
    redone = _study(phantom_split, cache_root, out)
    assert (redone.cells_run, redone.cells_reused) == (1, 3)
    assert redone.rows.set_index(["mode", "fraction", "finding"])["auroc"].equals(
        result.rows.set_index(["mode", "fraction", "finding"])["auroc"]
    )

    monkeypatch.setattr(le, "finetune_and_score", crash)  # a finished study never trains again
    again = _study(phantom_split, cache_root, out)
    assert (again.cells_run, again.cells_reused) == (0, 4)
    assert again.rows.equals(redone.rows)
    with pytest.raises(ConfigError, match="rank: 8 -> 4"):
        _study(phantom_split, cache_root, out, rank=4)


def test_a_fraction_holding_no_patient_is_skipped_and_counted(phantom_split, cache_root, tmp_path):
    result = _study(phantom_split, cache_root, tmp_path / "tiny", fractions=(0.001, 1.0), modes=("linear",))
    assert result.cells_run == 1
    assert [(c["mode"], c["fraction"]) for c in result.skipped_cells] == [("linear-probe", 0.001)]
    assert "holds no patient" in result.skipped_cells[0]["reason"]
    rows = read_label_efficiency(tmp_path / "tiny" / "label_efficiency.csv")
    skipped = rows[rows["fraction"] == 0.001]
    assert len(skipped) == 1 and skipped["auroc"].isna().all() and "holds no patient" in skipped["skipped"].iloc[0]
    assert list(curve_summary(rows)["fraction"]) == [1.0]
    document = json.loads((tmp_path / "tiny" / "label_efficiency.json").read_text())
    assert document["schema"] == "greenfm.label-efficiency/1" and len(document["skipped_cells"]) == 1


def test_each_fine_tune_prints_its_ledger_in_one_line_and_the_study_its_total(phantom_split, cache_root, tmp_path):
    lines: list[str] = []
    le.run_label_efficiency(data=phantom_split, out=tmp_path / "study", cache=cache_root, echo=lines.append,
                            **{**STUDY, "fractions": (1.0,)})  # fmt: skip
    cell_lines = [line for line in lines if line.strip().startswith("compute:")]
    assert len(cell_lines) == 1 and "device-hours" in cell_lines[0] and "\n" not in cell_lines[0]
    total = next(line for line in lines if line.startswith("study compute"))
    assert "(1 fine-tuned cells)" in total and "device-hours" in total
    assert not any("peak host RSS" in line for line in lines)  # no 20-line table per cell
