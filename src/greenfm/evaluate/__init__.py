"""Evaluation: per-finding metrics, patient-bootstrap CIs and model comparisons."""

from greenfm.evaluate.bootstrap import (
    bootstrap_metrics,
    patient_resample_counts,
    weighted_auroc,
    weighted_average_precision,
)
from greenfm.evaluate.comparison import Comparison, SeedSummary, rfg_compare, seed_summaries, seed_summary
from greenfm.evaluate.metrics import (
    FindingMetrics,
    Metrics,
    binary_metrics,
    compute_metrics,
    multiclass_metrics,
    multilabel_metrics,
)

__all__ = [
    "Comparison",
    "FindingMetrics",
    "Metrics",
    "SeedSummary",
    "binary_metrics",
    "bootstrap_metrics",
    "compute_metrics",
    "multiclass_metrics",
    "multilabel_metrics",
    "patient_resample_counts",
    "rfg_compare",
    "seed_summaries",
    "seed_summary",
    "weighted_auroc",
    "weighted_average_precision",
]
