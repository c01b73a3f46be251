"""Curation on 2 gloo processes: rank 0 decides on the gathered batch and broadcasts, so the prototypes,
the subset and the training equal one process with the whole global batch."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

import torch
from recipe_toys import config, recipe, samples

from greenfm.engine import fit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from engine_toy import forked, free_port, one_thread  # noqa: E402

WORLD = 2
SETTINGS = dict(epochs=2, schedule="constant")


def _rank(rank: int, port: int, out: Path) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD), LOCAL_WORLD_SIZE=str(WORLD), GROUP_RANK="0", TORCHELASTIC_RUN_ID="greenfm-curation",
    )  # fmt: skip
    try:
        chex = recipe(dropout=False)
        fit(chex, samples(48), config(**SETTINGS), out / "run", export=False)
        torch.save({"subset": chex.training_subset(), "prototypes": chex.curator.prototypes.clone(),
                    "kept": chex.curator.kept_per_cluster.tolist()}, out / f"rank-{rank}.pt")  # fmt: skip
    except BaseException:
        (out / f"error-{rank}.txt").write_text(traceback.format_exc())
        raise


def test_two_processes_select_the_same_subset_as_one(tmp_path):
    with one_thread():
        single = recipe(dropout=False)
        fit(single, samples(48), config(**SETTINGS), tmp_path / "single", export=False)
    port = free_port()
    ranks = [forked(_rank, rank, port, tmp_path) for rank in range(WORLD)]
    for process in ranks:
        process.join(timeout=180)
    errors = [p.read_text() for p in tmp_path.glob("error-*.txt")]
    assert not errors and all(p.exitcode == 0 for p in ranks), errors
    for rank in range(WORLD):
        saved = torch.load(tmp_path / f"rank-{rank}.pt")
        assert saved["subset"] == single.training_subset()
        assert saved["kept"] == single.curator.kept_per_cluster.tolist()
        torch.testing.assert_close(saved["prototypes"], single.curator.prototypes, rtol=1e-4, atol=1e-5)
    assert 0 < len(single.training_subset()) < 48
