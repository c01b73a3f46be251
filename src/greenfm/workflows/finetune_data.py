"""The data side of fine-tuning: a split manifest, its task, trainable findings and label fractions.

``prepare_data`` loads and checks a manifest (train, val and test splits required),
resolves the task (multi-label BCE, or multi-class when every row is one-hot over
several findings) and builds the decode-once cache every split reads from.
``trainable_findings`` says which findings a training subset can teach (both classes
present) and why the others cannot; ``fraction_plan`` draws nested patient-grouped
subsets of the training split. Shared by ``greenfm finetune`` and
``greenfm evaluate label-efficiency``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from greenfm.data.contract import Contract
from greenfm.data.dataset import ImageDataset
from greenfm.data.manifest import Manifest
from greenfm.data.splits import FractionPlan, nested_label_fractions
from greenfm.errors import BadInputError, ConfigError
from greenfm.models.backbones import Encoder
from greenfm.workflows.inputs import encoder_contract, image_dataset, load_checked_manifest

SPLIT_NAMES = ("train", "val", "test")


@dataclass
class FinetuneData:
    """A checked manifest split three ways, its task, and the decode-once cache it reads from."""

    manifest: Manifest  # usable rows only (unreadable images left out with skip_bad)
    splits: dict[str, Manifest]
    task: str  # "multilabel" or "multiclass"
    names: list[str]  # findings (multi-label) or class columns (multi-class)
    contract: Contract
    cache: Any  # CacheStore or None

    def dataset(self, manifest: Manifest, names: Sequence[str], augment=None) -> ImageDataset:
        return ImageDataset(manifest, self.contract, cache=self.cache, augment=augment, findings=list(names))


def prepare_data(
    data: str | Path | Manifest,
    encoder: Encoder,
    *,
    findings: Sequence[str] | None = None,
    task: str = "auto",
    contract: str | None = None,
    modality: str | None = None,
    cache: str | Path | None = None,
    skip_bad: bool = False,
) -> FinetuneData:
    """Load and check the manifest, resolve the task and build (or reuse) the image cache."""
    from greenfm.workflows.pretrain import default_cache_root

    manifest = load_checked_manifest(data, skip_bad=skip_bad)
    splits = _three_splits(manifest)
    task, names = resolve_task(manifest, findings, task)
    the_contract = encoder_contract(encoder, contract, modality=modality)
    whole = image_dataset(manifest, the_contract, cache_root=cache or default_cache_root(), skip_bad=skip_bad)
    if len(whole) < len(manifest):  # unreadable images left out when the cache was built
        manifest = whole.manifest
        splits = _three_splits(manifest)
    return FinetuneData(manifest, splits, task, names, the_contract, whole.cache)


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
    one_hot = len(names) > 1 and np.isin(labels, [0, 1]).all() and (labels.sum(axis=1) == 1).all()
    if task == "multiclass" and not one_hot:
        raise BadInputError(
            "multi-class fine-tuning needs two or more finding columns with exactly one 1 per row",
            source=_source(manifest),
        )
    if task == "auto":
        task = "multiclass" if one_hot else "multilabel"
    return ("multilabel" if task == "binary" else task), names


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
    """Actual labelled training images and patients used, and the share of training images."""
    return {
        "n_train_images": len(subset),
        "n_train_patients": int(subset.table["patient_id"].nunique()),
        "actual_fraction": len(subset) / max(1, len(full_train)),
    }


def _three_splits(manifest: Manifest) -> dict[str, Manifest]:
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


def absolute_path(path: str | Path) -> str:
    """An existing path made absolute (saved configs survive a change of directory); names kept as given."""
    candidate = Path(str(path)).expanduser()
    return str(candidate.resolve()) if candidate.exists() else str(path)


def _source(manifest: Manifest) -> str | None:
    return str(manifest.source) if manifest.source else None
