"""Nested, patient-closed subsets of a scaling study, and the equal-steps training plan of its cells."""

from __future__ import annotations

import numpy as np
import pytest

from greenfm.errors import BadInputError, ConfigError
from greenfm.workflows.scaling_cells import cell_training
from greenfm.workflows.scaling_config import ScalingConfig
from greenfm.workflows.scaling_subsets import nested_patient_subsets


def _patients(n_patients=200, seed=0):
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 6, n_patients)  # 1-5 images per patient
    return np.repeat([f"p{i:03d}" for i in range(n_patients)], counts)


def test_subsets_are_nested_patient_closed_and_the_shortest_prefix():
    ids = _patients()
    plan = nested_patient_subsets(ids, [50, 120, 300], seed=4)
    masks = [plan.mask(ids, s) for s in plan.subsets]
    for subset, mask in zip(plan.subsets, masks):
        assert mask.sum() == subset.images >= subset.requested[0]
        chosen = set(ids[mask])
        assert len(chosen) == subset.patients
        assert not (set(ids[~mask]) & chosen)  # every image of a chosen patient is in, no patient is split
        # the shortest prefix: without its last patient the subset falls below the size asked
        last = plan.patient_order[subset.patients - 1]
        assert subset.images - int((ids == last).sum()) < subset.requested[0]
    for small, large in zip(masks, masks[1:]):
        assert not (small & ~large).any()  # every smaller subset lies inside every larger one
    # one fixed shuffle: the same seed gives the same order, another seed another one
    assert nested_patient_subsets(ids, [50], seed=4).patient_order == plan.patient_order
    assert nested_patient_subsets(ids, [50], seed=5).patient_order != plan.patient_order


def test_sizes_beyond_the_data_are_capped_and_identical_subsets_merged():
    ids = np.array(["a", "a", "a", "b", "c", "c"])
    plan = nested_patient_subsets(ids, [1, 2, 100, 50], seed=0)
    images = [s.images for s in plan.subsets]
    assert images[-1] == 6 and len(set(images)) == len(images)
    assert any("100 is more than the 6 training images" in n for n in plan.notes)
    assert any("merged" in n and "50, 100" in n for n in plan.notes)
    assert sum(len(s.requested) for s in plan.subsets) == 4  # every size asked is answered by one subset
    with pytest.raises(BadInputError, match="positive"):
        nested_patient_subsets(ids, [0, 5])


def _config(tmp_path, **options):
    data = tmp_path / "m.csv"
    data.write_text("path,patient_id\nx.png,p\n")
    return ScalingConfig(**{"data": str(data), "sizes": [10], "steps": 40, **options})


def test_every_size_gets_the_same_steps_batch_and_schedule(tmp_path):
    plan = cell_training(_config(tmp_path, recipe=["token-reconstruction"], train={"batch_size": 16}),
                         "token-reconstruction")  # fmt: skip
    cells = {n: plan.for_size(n) for n in (20, 100, 1000)}
    for n, options in cells.items():
        assert options["max_steps"] == 40 and options["batch_size"] == 16 and options["drop_last"]
        assert options["schedule_interval"] == "step" and options["t_initial"] == 40
        assert options["epochs"] * (n // 16) >= 40  # max_steps, not the epochs, ends every run
    assert cells[20]["warmup"] == cells[1000]["warmup"] == 4  # the recipe's 10% warm-up, in steps
    # a subset smaller than the batch trains on itself each step
    assert not plan.for_size(8)["drop_last"] and plan.for_size(8)["epochs"] == 40
    with pytest.raises(ConfigError, match="--steps"):
        cell_training(_config(tmp_path, train={"max_steps": 3}), "clip")
