"""What a labelled, split manifest can teach: its task, its trainable findings and nested label fractions.

``resolve_task`` says whether a manifest is multi-label (BCE per finding) or
multi-class (every row one-hot over several findings); ``trainable_findings`` which
findings a training subset can teach (both classes present) and why the others
cannot; ``fraction_plan`` draws nested patient-grouped subsets of the training split;
``three_splits`` cuts a manifest into train, val and test. Shared by fine-tuning and
label-efficiency studies.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from greenfm.data.manifest import Manifest
from greenfm.data.splits import FractionPlan, nested_label_fractions
from greenfm.errors import BadInputError, ConfigError

SPLIT_NAMES = ("train", "val", "test")


def resolve_task(manifest: Manifest, findings: Sequence[str] | None, task: str) -> tuple[str, list[str]]:
    """("multilabel" | "multiclass", names); ``binary`` is multi-label with one finding."""
    names = list(findings) if findings else list(manifest.findings)
    if not names:
        raise BadInputError("the manifest has no finding columns to learn", source=_source(manifest))
    unknown = [n for n in names if n not in manifest.findings]
    if unknown:
        raise BadInputError(f"finding(s) {unknown} not in the manifest; it has {manifest.findings}",
                            source=_source(manifest))
    labels = manifest.labels(names)
    empty = [n for n, col in zip(names, labels.T) if not np.isfinite(col).any()]
    if len(empty) == len(names):
        raise BadInputError(f"every finding asked for is unlabelled (all empty): {empty}", source=_source(manifest))
    if task == "binary" and len(names) != 1:
        raise ConfigError(f"task 'binary' needs one finding, got {len(names)}: {names}")
    one_hot = is_one_hot(labels)
    if task == "multiclass" and not one_hot:
        raise BadInputError(
            "multi-class fine-tuning needs two or more finding columns with exactly one 1 per row",
            source=_source(manifest),
        )
    if task == "auto":
        task = "multiclass" if one_hot else "multilabel"
    return ("multilabel" if task == "binary" else task), names


def is_one_hot(labels: np.ndarray) -> bool:
    """The one rule for ``task auto`` (fine-tuning and probes): several columns, every row 0/1 with exactly
    one 1 (a class-per-folder import) is multi-class; anything else is multi-label (binary with one column)."""
    labels = np.asarray(labels, dtype=float)
    return labels.ndim == 2 and labels.shape[1] > 1 and bool(np.isin(labels, [0, 1]).all()) \
        and bool((labels.sum(axis=1) == 1).all())


def trainable_findings(labels: np.ndarray, names: Sequence[str], task: str) -> tuple[list[str], dict[str, str]]:
    """The findings a training subset can teach, and why the others cannot (counted skips).

    Multi-label: a finding needs both a positive and a negative label. Multi-class: two
    classes must be present; absent classes stay in the softmax (they are reported).
    """
    y = np.asarray(labels, dtype=float)
    if task == "multiclass":
        present = [n for n, col in zip(names, y.T) if (col == 1).any()]
        if len(present) < 2:
            raise BadInputError(f"multi-class training needs two classes in train, found {present or 'none'}")
        return list(names), {}
    kept, skipped = [], {}
    for name, col in zip(names, y.T):
        n_pos, n_neg = int((col == 1).sum()), int((col == 0).sum())
        if n_pos + n_neg == 0:
            skipped[name] = "no labels in train"
        elif n_pos == 0:
            skipped[name] = f"no positive in train ({n_neg} negatives)"
        elif n_neg == 0:
            skipped[name] = f"only one class in train ({n_pos} positives, no negative)"
        else:
            kept.append(name)
    return kept, skipped


def fraction_plan(train: Manifest, fractions: Sequence[float], *, seed: int, names: Sequence[str]) -> FractionPlan:
    """Nested patient-grouped subsets of the training split (stratified by ``names``)."""
    with warnings.catch_warnings():  # findings left without positives are skipped and counted by the caller
        warnings.simplefilter("ignore")
        return nested_label_fractions(train, fractions, seed=seed, findings=list(names))


def holds_a_patient(fraction: float, n_patients: int) -> bool:
    """False when ``fraction`` of ``n_patients`` rounds to no patient at all."""
    return fraction * n_patients >= 0.5


def subset_counts(subset: Manifest, full_train: Manifest) -> dict[str, Any]:
    """Actual labelled training images and patients used, and their shares of the training split."""
    n_patients = int(subset.table["patient_id"].nunique())
    return {
        "n_train_images": len(subset),
        "n_train_patients": n_patients,
        "actual_fraction": len(subset) / max(1, len(full_train)),
        "patient_fraction": n_patients / max(1, int(full_train.table["patient_id"].nunique())),
    }


def three_splits(manifest: Manifest) -> dict[str, Manifest]:
    """The train, val and test parts of a manifest; each must hold rows."""
    if not manifest.has_splits:
        raise BadInputError("the manifest has no 'split' column; run `greenfm data split` first",
                            source=_source(manifest))
    split = manifest.table["split"]
    splits = {name: manifest.subset((split == name).fillna(False).to_numpy(dtype=bool)) for name in SPLIT_NAMES}
    empty = [name for name, part in splits.items() if len(part) == 0]
    if empty:
        raise BadInputError(f"the manifest has no rows in split(s) {empty}; fine-tuning needs train, val and test "
                            "(run `greenfm data split`)", source=_source(manifest))  # fmt: skip
    return splits


def _source(manifest: Manifest) -> str | None:
    return str(manifest.source) if manifest.source else None
