"""The report's building blocks: label-efficiency schema, green card formatting, figures."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from report_factory import write_label_efficiency

from greenfm.errors import BadInputError
from greenfm.report.green_card import UNAVAILABLE, green_card, significant
from greenfm.report.label_efficiency import curve_summary, read_label_efficiency, validate
from greenfm.report.plots import roc_curve_of, roc_grid


def test_label_efficiency_schema_round_trip_and_summary(tmp_path):
    written = write_label_efficiency(tmp_path / "label_efficiency.csv")
    table = read_label_efficiency(tmp_path / "label_efficiency.csv")
    assert len(table) == len(written)
    summary = curve_summary(table)
    assert list(summary["mode"].unique()) == ["linear-probe", "lora"] and len(summary) == 6
    lora_full = summary[(summary["mode"] == "lora") & (summary["fraction"] == 1.0)].iloc[0]
    macro = written[(written["mode"] == "lora") & (written["fraction"] == 1.0) & (written["finding"] == "macro")]
    assert lora_full["n_seeds"] == 3
    assert lora_full["auroc_mean"] == pytest.approx(macro["auroc"].mean())
    assert lora_full["ci_low"] == pytest.approx(macro["ci_low"].mean())

    rows = written.to_dict(orient="records")
    (tmp_path / "label_efficiency.json").write_text(
        json.dumps({"schema": "greenfm.label-efficiency/1", "rows": rows}, default=lambda v: None)
    )
    assert len(read_label_efficiency(tmp_path / "label_efficiency.json")) == len(written)


def test_label_efficiency_without_macro_rows_averages_findings_without_interval():
    table = validate(
        pd.DataFrame(
            {
                "mode": ["lora"] * 4,
                "fraction": [0.1, 0.1, 1.0, 1.0],
                "seed": [0, 0, 0, 0],
                "finding": ["a", "b", "a", "b"],
                "auroc": [0.6, 0.8, 0.7, 0.9],
                "ci_low": None,
                "ci_high": None,
            }
        )
    )
    summary = curve_summary(table)
    assert summary["auroc_mean"].tolist() == pytest.approx([0.7, 0.8])
    assert summary["ci_low"].isna().all()


def test_label_efficiency_schema_errors_name_the_problem():
    with pytest.raises(BadInputError, match=r"lack column\(s\) \['ci_low', 'ci_high'\]"):
        validate(pd.DataFrame({"mode": ["x"], "fraction": [0.5], "seed": [0], "finding": ["macro"], "auroc": [0.7]}))
    with pytest.raises(BadInputError, match=r"fraction must lie in \(0, 1\]"):
        validate(
            pd.DataFrame(
                {
                    "mode": ["x"],
                    "fraction": [10],
                    "seed": [0],
                    "finding": ["macro"],
                    "auroc": [0.7],
                    "ci_low": [0.6],
                    "ci_high": [0.8],
                }
            )
        )


def test_green_card_keeps_unavailable_and_formats_numbers():
    ledger = {
        "device_hours": 0.25,
        "device_name": "NVIDIA H100",
        "device_count": 1,
        "wall_time_s": 900.0,
        "energy_kwh": UNAVAILABLE,
        "co2_kg": UNAVAILABLE,
        "peak_device_memory_allocated_bytes": 3 * 2**30,
        "peak_host_rss_bytes": UNAVAILABLE,
        "forward_flops_per_image": 4.534e10,
        "total_training_flops": 1.6e18,
        "samples_seen": 9_000_000,
        "images_per_s": 123.4,
        "unavailable": {"energy_kwh": "codecarbon could not start", "co2_kg": "codecarbon could not start"},
    }
    items = {i.key: i for i in green_card(ledger, n_parameters=21_832_704)}
    assert items["energy_kwh"].value == UNAVAILABLE and items["energy_kwh"].detail == "codecarbon could not start"
    assert items["peak_host_rss_bytes"].value == UNAVAILABLE and items["peak_host_rss_bytes"].detail
    assert items["device_hours"].value == "0.25 h" and items["wall_time_s"].value == "15 min"
    assert items["forward_flops_per_image"].value == "45.3 GFLOP" and items["total_training_flops"].value == "1.6 EFLOP"
    assert items["parameters"].value == "21.8 million" and items["peak_device_memory_allocated_bytes"].value == "3 GiB"
    assert all(i.value == UNAVAILABLE for i in green_card(None) if i.key != "parameters")
    assert significant(0.000012345) == "1.23e-05" and significant(0.5) == "0.5"


def test_roc_of_a_one_class_finding_is_a_reason_not_a_curve():
    assert "only one class" in roc_curve_of("m", np.zeros(10), np.linspace(0, 1, 10))
    curve = roc_curve_of("m", np.array([0, 0, 1, 1, -1, np.nan]), np.array([0.1, 0.4, 0.35, 0.8, 0.9, 0.2]))
    assert curve.auroc == pytest.approx(0.75) and curve.n == 4
    uri = roc_grid({"a": [curve]}, {"b": "only one class present"})
    image = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert image.width > image.height > 100  # two panels side by side
