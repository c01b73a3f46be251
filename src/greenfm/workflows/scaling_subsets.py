"""Nested, patient-closed training subsets of a scaling study (METHODS 5.3, step 1).

The training patients are shuffled once with a fixed seed; the subset for ``n`` images is
the shortest prefix of that order holding at least ``n`` images. Every smaller subset is
therefore inside every larger one, and a patient is either wholly in a subset or not at
all. Sizes above the data are capped to the whole split; sizes that give the same prefix
are merged. Both are said in ``notes`` and the actual images and patients are recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from greenfm.errors import BadInputError


@dataclass(frozen=True)
class Subset:
    """One size of the study: the patient prefix and what it actually holds."""

    requested: tuple[int, ...]  # the asked sizes this prefix answers (several when merged)
    patients: int  # length of the patient prefix
    images: int  # images of those patients

    @property
    def key(self) -> str:
        return f"n{self.images}"

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "requested": list(self.requested), "images": self.images, "patients": self.patients}


@dataclass
class SubsetPlan:
    """The patient order and the subsets cut from it, smallest first."""

    patient_order: list[str]
    subsets: list[Subset]
    total_images: int
    seed: int
    notes: list[str] = field(default_factory=list)

    def mask(self, patient_ids: Any, subset: Subset) -> np.ndarray:
        """Rows of a table (by their patient ids) that belong to ``subset``."""
        chosen = set(self.patient_order[: subset.patients])
        return np.asarray([str(p) in chosen for p in patient_ids], dtype=bool)

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "total_images": self.total_images, "total_patients": len(self.patient_order),
                "subsets": [s.to_dict() for s in self.subsets], "notes": list(self.notes),
                "patient_order": list(self.patient_order)}  # fmt: skip


def nested_patient_subsets(patient_ids: Any, sizes: list[int], *, seed: int = 0) -> SubsetPlan:
    """Cut nested patient-prefix subsets of ``sizes`` images from rows with ``patient_ids``."""
    ids = pd.Series(np.asarray(patient_ids).astype(str))
    if ids.empty:
        raise BadInputError("no training rows to draw subsets from")
    if any(int(n) < 1 for n in sizes):
        raise BadInputError(f"subset sizes must be positive image counts, got {sorted(sizes)}")
    per_patient = ids.value_counts().sort_index()  # sorted first: the shuffle depends on the seed only
    order = np.random.default_rng(seed).permutation(per_patient.index.to_numpy())
    cumulative = np.cumsum(per_patient.loc[order].to_numpy())
    total = int(cumulative[-1])
    notes: list[str] = []
    by_prefix: dict[int, list[int]] = {}
    for n in sorted({int(n) for n in sizes}):
        if n > total:
            notes.append(f"size {n:,} is more than the {total:,} training images: capped to all of them")
            k = len(order)
        else:
            k = int(np.searchsorted(cumulative, n)) + 1  # first prefix with >= n images
        by_prefix.setdefault(k, []).append(n)
    subsets = [Subset(tuple(asked), k, int(cumulative[k - 1])) for k, asked in sorted(by_prefix.items())]
    for subset in subsets:
        if len(subset.requested) > 1:
            asked = ", ".join(f"{n:,}" for n in subset.requested)
            notes.append(f"sizes {asked} give the same subset ({subset.images:,} images of {subset.patients:,} "
                         "patients): merged into one")  # fmt: skip
    return SubsetPlan([str(p) for p in order], subsets, total, seed, notes)
