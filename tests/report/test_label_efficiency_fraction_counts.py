"""Wherever a label fraction is shown, its actual counts are shown too, and repeats are flagged."""

from __future__ import annotations

import pandas as pd

from greenfm.report.label_efficiency import curve_summary, fraction_label


def test_fractions_show_patients_and_images_and_identical_subsets_are_flagged():
    rows = []
    for fraction, patients, images in ((0.01, 7, 99), (0.1, 7, 99), (1.0, 70, 700)):
        for seed in (0, 1):
            rows.append({"mode": "linear-probe", "fraction": fraction, "seed": seed, "finding": "macro",
                         "auroc": 0.7, "ci_low": 0.6, "ci_high": 0.8, "n_train_images": images,
                         "n_train_patients": patients})  # fmt: skip
    summary = curve_summary(pd.DataFrame(rows))
    labels = [fraction_label(r) for _, r in summary.iterrows()]
    assert labels[0] == "1% (7 patients, 99 images)"
    assert labels[1] == "10% (7 patients, 99 images) = the 1% subset"
    assert labels[2] == "100% (70 patients, 700 images)"
