"""Label-efficiency modes compared at each fraction on the same test images, paired."""

from __future__ import annotations

import numpy as np
import pandas as pd

from greenfm.workflows.label_efficiency_pairs import format_paired_modes, paired_modes


def _predictions(folder, labels, scores):
    folder.mkdir(parents=True)
    n = len(labels)
    pd.DataFrame({"id": [f"i{k}" for k in range(n)], "patient_id": [f"p{k // 2}" for k in range(n)],
                  "split": "test", "finding": "effusion", "label": labels, "score": scores}).to_parquet(
        folder / "predictions.parquet")


def test_each_mode_pair_is_compared_where_both_cells_finished(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    noise = rng.normal(0, 1, 400)
    _predictions(tmp_path / "runs" / "linear-probe-f1-s0", labels, labels + 2.0 * noise)  # weak
    _predictions(tmp_path / "runs" / "lora-f1-s0", labels, labels + 0.5 * noise)  # strong, same images
    _predictions(tmp_path / "runs" / "linear-probe-f0.1-s0", labels, labels + noise)  # no partner at 10%
    rows = paired_modes(tmp_path, (0.1, 1.0), n_resamples=200)
    assert [(r["fraction"], r["a"], r["b"]) for r in rows] == [(1.0, "linear-probe", "lora")]
    row = rows[0]
    assert row["auroc_b"] > row["auroc_a"] and row["verdict"] == "b better"
    low, high = row["difference_ci"]
    assert 0 < low < row["difference"] < high
    assert np.isclose(row["difference"], row["auroc_b"] - row["auroc_a"])
    lines = format_paired_modes(rows)
    assert len(lines) == 2 and "lora vs linear-probe" in lines[1] and "lora better" in lines[1]
    assert format_paired_modes([]) == []
