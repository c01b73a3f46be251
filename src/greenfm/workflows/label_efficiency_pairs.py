"""The modes of one label-efficiency study compared at each label fraction, paired.

At a given fraction and seed the linear probe, LoRA and full fine-tuning are scored on
the same test images (each cell's ``predictions.parquet``), so their macro AUROCs can be
compared with one set of patient resamples (``greenfm.evaluate.paired``): the paired 95% CI
of B - A is far narrower than either model's own CI, and it is the one to read when asking
whether LoRA beats the probe at 10% of the labels. A pair with a cell missing is left out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from greenfm.evaluate.paired import paired_comparison, verdict

MODE_PAIRS = (("linear-probe", "lora"), ("linear-probe", "full-finetune"), ("lora", "full-finetune"))
"""(A, B) per fraction: each adaptation against the probe, and full fine-tuning against LoRA."""


def paired_modes(
    study: str | Path,
    fractions: Sequence[float],
    *,
    seed: int = 0,
    n_resamples: int = 1000,
    bootstrap_seed: int = 0,
) -> list[dict[str, Any]]:
    """One row per (fraction, pair) whose two cells both finished: macro AUROC of A and B, B - A, its paired CI."""
    runs = Path(study) / "runs"
    rows = []
    for fraction in fractions:
        for mode_a, mode_b in MODE_PAIRS:
            paths = [runs / f"{mode}-f{fraction:g}-s{seed}" / "predictions.parquet" for mode in (mode_a, mode_b)]
            if not all(path.is_file() for path in paths):
                continue
            a, b = (pd.read_parquet(path) for path in paths)
            macro = paired_comparison(a, b, model_a=mode_a, model_b=mode_b, n_resamples=n_resamples,
                                      seed=bootstrap_seed, wilcoxon=False).macro  # fmt: skip
            rows.append({"fraction": fraction, "a": mode_a, "b": mode_b, "auroc_a": macro.auroc_a,
                         "auroc_b": macro.auroc_b, "difference": macro.difference,
                         "difference_ci": list(macro.difference_ci) if macro.difference_ci else None,
                         "verdict": verdict(macro.difference_ci)})  # fmt: skip
    return rows


def format_paired_modes(rows: list[dict[str, Any]]) -> list[str]:
    """Plain-text lines: fraction, B vs A, the two AUROCs and B - A with its paired CI."""
    if not rows:
        return []
    lines = [f"{'fraction':>8}  {'B vs A':<30} {'A':>6} {'B':>6} {'B - A':>7}  paired 95% CI"]
    for r in rows:
        low, high = r["difference_ci"] or (float("nan"), float("nan"))
        verdict_text = {"b better": f"{r['b']} better", "a better": f"{r['a']} better"}.get(r["verdict"], r["verdict"])
        lines.append(f"{r['fraction']:>8g}  {r['b'] + ' vs ' + r['a']:<30} {r['auroc_a']:6.3f} {r['auroc_b']:6.3f} "
                     f"{r['difference']:+7.3f}  [{low:+.3f}, {high:+.3f}] {verdict_text}")  # fmt: skip
    return lines
