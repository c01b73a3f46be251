"""What a training subset can teach: findings without both classes are skipped and counted."""

from __future__ import annotations

import numpy as np
import pytest

from greenfm.data.tasks import trainable_findings
from greenfm.errors import BadInputError


def test_findings_a_subset_cannot_teach_are_skipped_and_counted():
    labels = np.array([[1, 0, np.nan, 1], [0, 0, np.nan, 1], [1, 0, np.nan, -1]], dtype=float)
    kept, skipped = trainable_findings(labels, ["a", "b", "c", "d"], "multilabel")
    assert kept == ["a"]
    assert skipped == {"b": "no positive in train (3 negatives)", "c": "no labels in train",
                       "d": "only one class in train (2 positives, no negative)"}  # fmt: skip
    with pytest.raises(BadInputError, match="two classes"):
        trainable_findings(np.array([[1, 0], [1, 0]], dtype=float), ["x", "y"], "multiclass")
