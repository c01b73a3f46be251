"""Threads and DataLoader workers chosen from the machine (greenfm.engine.threads)."""

from __future__ import annotations

import torch

from greenfm.engine.threads import plan_threads
from greenfm.engine.train_config import TrainConfig


def test_cpu_runs_use_no_workers_and_the_free_cores():
    plan = plan_threads(None, None, device_type="cpu", cores=2, busy=0)
    assert (plan.threads, plan.workers) == (2, 0)
    busy = plan_threads(None, None, device_type="cpu", cores=2, busy=5)
    assert (busy.threads, busy.workers) == (1, 0)  # other jobs' load is not claimed
    # two processes share the cores; workers given on CPU come out of the threads
    assert plan_threads(None, None, device_type="cpu", processes=2, cores=8, busy=0).threads == 4
    assert plan_threads(None, 2, device_type="cpu", cores=8, busy=0).threads == 6


def test_gpu_runs_feed_the_device_with_workers_and_explicit_values_win():
    gpu = plan_threads(None, None, device_type="cuda", cores=16, busy=0)
    assert gpu.workers == 4 and gpu.threads >= 1
    assert plan_threads(None, None, device_type="cuda", cores=2, busy=0).workers == 1
    given = plan_threads(3, 5, device_type="cpu", cores=2, busy=0)
    assert (given.threads, given.workers, given.chosen) == (3, 5, False)
    # OMP_NUM_THREADS / an earlier set_num_threads caps the machine's choice
    assert plan_threads(None, None, device_type="cpu", cores=16, busy=0, current_threads=1).threads == 1


def test_the_default_config_leaves_the_choice_to_the_machine():
    config = TrainConfig()
    assert config.num_workers is None and config.threads is None


def test_fit_uses_the_chosen_threads_and_records_them(tmp_path):
    from engine_toy import ToyData, ToyMethod
    from greenfm.engine import fit

    before = torch.get_num_threads()
    seen = []

    class Spy(ToyMethod):
        def training_step(self, batch):
            seen.append(torch.get_num_threads())
            return super().training_step(batch)

    result = fit(Spy(), ToyData(), TrainConfig(epochs=1, batch_size=8, threads=1, num_workers=0,
                                                   track_energy=False, progress_bar=False), tmp_path / "run")
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == before
    assert result.compute["torch_threads"] == 1 and result.compute["dataloader_workers"] == 0


def test_the_ledger_reaches_the_screen_once(tmp_path, caplog):
    import logging

    from engine_toy import ToyData, ToyMethod
    from greenfm.engine import fit

    with caplog.at_level(logging.INFO, logger="greenfm"):
        fit(ToyMethod(), ToyData(), TrainConfig(epochs=1, batch_size=8, threads=1, track_energy=False,
                                                progress_bar=False), tmp_path / "run")  # fmt: skip
    ledger = [r for r in caplog.records if r.getMessage().startswith("compute:")]
    assert len(ledger) == 1 and ledger[0].file_only  # the table is printed; the record goes to train.log only
    assert "compute:" in (tmp_path / "run" / "train.log").read_text()
