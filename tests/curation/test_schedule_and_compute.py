"""METHODS 4.4 figures: the lr under both horizon rules (as the engine's scheduler sets it) and the compute
of a curated run as a fraction of the full-data run, formula and measured by the engine's ledger."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from greenfm.curation import compute_fraction
from greenfm.curation.arithmetic import curated_lr
from greenfm.engine import TrainConfig, fit
from greenfm.engine.optim import build_scheduler, retarget_horizon
from greenfm.errors import ConfigError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from engine_toy import ToyData, ToyMethod, toy_config  # noqa: E402

N_FULL, N_SUB, EPOCHS = 2573, 585, 20


def _engine_lrs(rule: str) -> dict[str, float]:
    config = TrainConfig(epochs=EPOCHS, lr=5e-5, min_lr=5e-6, schedule="cosine", schedule_interval="step", warmup=0)
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=5e-5)
    scheduler = build_scheduler(optimizer, config, total_steps=EPOCHS * N_FULL)

    def lr_at(step):
        scheduler.step_update(step)
        return optimizer.param_groups[0]["lr"]

    last_of_epoch_1 = lr_at(N_FULL - 1)
    total = N_FULL + (EPOCHS - 1) * N_SUB
    retarget_horizon(scheduler, config, rule, total_steps=total, steps_per_epoch=N_SUB)
    return {"epoch1_end": last_of_epoch_1, "epoch2_start": lr_at(N_FULL), "final": lr_at(total - 1),
            "state": scheduler.state_dict()}  # fmt: skip


def test_official_horizon_reproduces_the_release_drift():
    lrs = _engine_lrs("official")
    assert lrs["epoch1_end"] == pytest.approx(4.97e-5, abs=5e-8)
    assert lrs["epoch2_start"] == pytest.approx(4.48e-5, abs=5e-8)
    assert lrs["final"] == pytest.approx(8.1e-6, abs=5e-8)
    assert lrs["state"]["continue_past_horizon"] and lrs["state"]["t_initial"] == 20 * N_SUB  # saved for resume
    bottom = min(range(N_FULL, N_FULL + 19 * N_SUB), key=lambda s: curated_lr(s, full_steps=N_FULL, subset_steps=N_SUB,
                                                                            horizon="official"))  # fmt: skip
    assert 1 + (bottom - N_FULL) / N_SUB == pytest.approx(16.6, abs=0.05)  # bottoms out after ~16.6 epochs


def test_fixed_horizon_ends_at_min_lr():
    lrs = _engine_lrs("fixed")
    assert lrs["final"] == pytest.approx(5.0e-6, abs=1e-9)
    assert lrs["epoch2_start"] < lrs["epoch1_end"]
    for rule in ("fixed", "official"):
        engine = _engine_lrs(rule)
        assert engine["final"] == pytest.approx(curated_lr(N_FULL + 19 * N_SUB - 1, full_steps=N_FULL, subset_steps=N_SUB,
                                                           horizon=rule), rel=1e-9)  # fmt: skip


def test_unknown_horizon_rule_is_refused():
    config = TrainConfig(epochs=2)
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])
    with pytest.raises(ConfigError, match="unknown lr_horizon"):
        retarget_horizon(build_scheduler(optimizer, config, total_steps=4), config, "paper", total_steps=4,
                         steps_per_epoch=2)  # fmt: skip


def test_compute_fraction_formula():
    assert compute_fraction(0.227) == pytest.approx(0.266, abs=5e-4)
    assert compute_fraction(0.225) == pytest.approx(0.264, abs=5e-4)


class FixedSubsetToy(ToyMethod):
    """Keeps the first ``keep`` items from epoch 2 on (as a curating recipe would)."""

    lr_horizon = "fixed"

    def __init__(self, keep: int):
        super().__init__(noise=0.0)
        self.keep, self.epoch = keep, 0

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch

    def training_subset(self):
        return list(range(self.keep)) if self.epoch >= 1 else None


def test_the_ledger_measures_the_curated_compute_fraction(tmp_path):
    # f = 9 / 40 = 0.225 over 20 epochs: one full epoch of 40, then 19 of 9 samples
    config = toy_config(epochs=20, batch_size=40, lr=1e-3, min_lr=1e-4, schedule="cosine", schedule_interval="step",
                        checkpoint_every_epochs=None, log_every_steps=50)  # fmt: skip
    result = fit(FixedSubsetToy(9), ToyData(40, augment=False), config, tmp_path / "run", export=False)
    ledger = result.compute
    assert result.steps == 20 and ledger["samples_seen"] == 40 + 19 * 9
    assert ledger["curated_subset_size"] == 9 and ledger["full_data_equivalent_samples"] == 800
    assert ledger["compute_fraction_of_full_data"] == pytest.approx(compute_fraction(0.225), rel=1e-9)
    assert round(ledger["compute_fraction_of_full_data"], 3) == 0.264
    assert (tmp_path / "run" / "subset.json").is_file()
