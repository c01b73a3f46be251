"""fit on a toy regression: the loss falls, precision, accumulation, schedule, evaluation, run folder."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from engine_toy import ToyData, ToyMethod, toy_config, weights

from greenfm.engine import TrainConfig, fit, load_weights, read_metrics, write_run_config
from greenfm.engine.optim import build_scheduler, current_lr
from greenfm.errors import ConfigError


def test_loss_falls_and_the_run_folder_is_complete(tmp_path):
    method = ToyMethod()
    result = fit(
        method,
        ToyData(64),
        toy_config(epochs=6, keep_periodic=-1, checkpoint_every_steps=8, checkpoint_every_epochs=None),
        tmp_path,
    )
    steps = read_metrics(tmp_path, "step")
    assert [r["step"] for r in steps] == list(range(1, 25))
    assert sum(r["loss"] for r in steps[-4:]) < 0.25 * sum(r["loss"] for r in steps[:4])
    assert len(read_metrics(tmp_path, "epoch")) == 6 and result.epochs_completed == 6 and result.steps == 24
    assert result.samples_seen == 6 * 64
    assert {p.name for p in (tmp_path / "checkpoints").iterdir()} == {
        "last.ckpt", "step-8.ckpt", "step-16.ckpt", "step-24.ckpt"
    }  # fmt: skip
    assert (tmp_path / "train.log").read_text().count("epoch 5:") == 1
    assert result.exported == tmp_path / "exported" / "last.safetensors"
    assert load_weights(torch.nn.Sequential(*ToyMethod().net), result.exported).exact
    assert all(mode is False for mode in method.teacher_modes)  # the frozen teacher stayed in eval mode
    assert int(method.updates) == 24  # on_after_optimizer_step ran once per step


def test_compute_ledger_fields(tmp_path):
    record = {"method": "toy", "data": {"fraction": 0.5}, "manifest": tmp_path / "m.csv"}
    result = fit(
        ToyMethod(),
        ToyData(32),
        toy_config(epochs=1, track_energy=True),
        tmp_path,
        flops_per_sample=1e6,
        run_record=record,
    )
    ledger = json.loads((tmp_path / "compute.json").read_text())
    assert ledger == json.loads(json.dumps(result.compute))
    assert ledger["optimizer_steps"] == 2 and ledger["samples_seen"] == 32 and ledger["device_type"] == "cpu"
    assert ledger["global_batch"] == ledger["per_device_batch"] == 16 and ledger["precision"] == "32"
    assert ledger["forward_flops_per_image"] == 2 * (8 * 32 + 32 * 1)  # the exported MLP
    assert ledger["training_flops_source"] == "method" and ledger["total_training_flops"] == 32e6
    assert ledger["peak_host_rss_bytes"] > 0 and ledger["wall_time_s"] > 0
    assert ledger["run"] == {"method": "toy", "data": {"fraction": 0.5}, "manifest": str(tmp_path / "m.csv")}
    for key in ("energy_kwh", "co2_kg", "gpu_energy_kwh_nvml", "peak_device_memory_allocated_bytes"):
        value = ledger[key]
        assert value == "unavailable" and ledger["unavailable"][key] if isinstance(value, str) else value > 0


def test_accumulation_equals_the_doubled_batch(tmp_path):
    finals = []
    for accumulate in (1, 2):
        method = ToyMethod(noise=0.0)
        config = toy_config(epochs=2, accumulate=accumulate, batch_size=16)
        fit(method, ToyData(40, augment=False), config, tmp_path / str(accumulate))  # last step: 8 images
        finals.append(weights(method))
    for key in finals[0]:
        torch.testing.assert_close(finals[0][key], finals[1][key], rtol=1e-5, atol=1e-6)


def test_logged_lr_follows_the_schedule(tmp_path):
    config = toy_config(epochs=3, warmup=3, warmup_lr_init=1e-4, min_lr=1e-4, lr=1e-2, grad_clip=0.5)
    fit(ToyMethod(), ToyData(32), config, tmp_path)
    assert all(r["grad_norm"] > 0 for r in read_metrics(tmp_path, "step"))  # clipped steps log the pre-clip norm
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])
    scheduler = build_scheduler(optimizer, config, total_steps=6)
    for row in read_metrics(tmp_path, "step"):
        scheduler.step_update(row["step"] - 1)  # the row of step s was trained at schedule point s - 1
        assert row["lr"] == pytest.approx(current_lr(optimizer), rel=1e-6)


def test_bf16_autocast_on_cpu_keeps_inputs_in_fp32(tmp_path):
    method = ToyMethod()
    fit(method, ToyData(32), toy_config(epochs=3, precision="bf16-mixed"), tmp_path)
    assert set(method.seen_dtypes[1:]) == {(torch.float32, torch.bfloat16)}  # [0] is the FLOP count, no autocast
    losses = [r["loss"] for r in read_metrics(tmp_path, "step")]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


def test_evaluate_selects_and_saves_the_best_epoch(tmp_path):
    method, seen = ToyMethod(), []
    scores = iter([0.2, 0.9, float("nan"), 0.5])

    def evaluate(model):
        assert model is method.net and not method.training
        seen.append(weights(method))
        return {"score": next(scores), "other": 1.0}

    result = fit(method, ToyData(32), toy_config(epochs=4), tmp_path, evaluate=evaluate, select_metric="score")
    assert method.training and result.best_epoch == 1 and result.best_metric == pytest.approx(0.9)
    best = ToyMethod()
    load_weights(best, result.best_checkpoint)
    assert all(torch.equal(best.state_dict()[k], seen[1][k]) for k in seen[1])
    assert [r.get("score") for r in read_metrics(tmp_path, "epoch")][:2] == [0.2, 0.9]


def test_a_folder_with_a_run_is_refused_and_resuming_a_finished_run_changes_nothing(tmp_path):
    method = ToyMethod()
    fit(method, ToyData(32), toy_config(), tmp_path)
    files = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p.name != "train.log"}
    with pytest.raises(ConfigError, match="already holds a run"):
        fit(ToyMethod(), ToyData(32), toy_config(), tmp_path)
    with pytest.raises(ConfigError, match="different training config.*lr"):
        fit(ToyMethod(), ToyData(32), toy_config(lr=0.5), tmp_path, resume=True)
    again = ToyMethod()
    result = fit(again, ToyData(32), toy_config(), tmp_path, resume=True)
    assert result.steps == 4 and result.compute["optimizer_steps"] == 4
    assert files == {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p.name != "train.log"}
    assert all(
        torch.equal(a, b) for a, b in zip(method.state_dict().values(), again.state_dict().values(), strict=True)
    )


def test_config_is_validated_and_batch_must_split(tmp_path):
    with pytest.raises(ValueError, match="min_lr"):
        TrainConfig(lr=1e-4, min_lr=1e-3)
    with pytest.raises(ValueError):
        TrainConfig(nonsense=1)
    with pytest.raises(ConfigError, match="does not split"):
        fit(ToyMethod(), ToyData(32), toy_config(batch_size=15, accumulate=2), tmp_path)


def test_write_run_config_adds_provenance(tmp_path):
    path = write_run_config(tmp_path, {"train": toy_config().to_dict()}, manifest_hash="abc", seed=3)
    data = yaml.safe_load(path.read_text())
    assert data["train"]["batch_size"] == 16
    prov = data["provenance"]
    assert prov["manifest_hash"] == "abc" and prov["seed"] == 3 and prov["git_sha"]
    assert prov["greenfm_version"] and prov["torch_version"] == torch.__version__ and prov["timestamp"]


@pytest.mark.parametrize("show", [True, False])
def test_the_ledger_is_printed_unless_switched_off_and_always_logged(tmp_path, capsys, show):
    fit(ToyMethod(), ToyData(16), toy_config(epochs=1, show_ledger=show), tmp_path)
    printed = capsys.readouterr().err
    assert ("device-hours" in printed) is show
    assert "device-hours" in (tmp_path / "train.log").read_text()


def test_ledger_totals_are_unavailable_when_any_run_was_not_measured():
    from greenfm.engine.ledger import ledger_line, ledger_totals

    measured = {"wall_time_s": 2.0, "device_hours": 0.001, "total_training_flops": 1e9, "energy_kwh": 1e-4,
                "co2_kg": 4e-5, "device_count": 1, "device_type": "cpu", "images_per_s": 100.0}  # fmt: skip
    unmeasured = {**measured, "energy_kwh": "unavailable", "co2_kg": "unavailable"}
    totals = ledger_totals([measured, measured])
    assert totals["runs"] == 2 and totals["wall_time_s"] == 4.0 and totals["energy_kwh"] == pytest.approx(2e-4)
    mixed = ledger_totals([measured, unmeasured])
    assert mixed["energy_kwh"] == "unavailable" and mixed["device_hours"] == pytest.approx(0.002)
    assert ledger_line(unmeasured).endswith("energy unavailable") and "0.0001 kWh" in ledger_line(measured)
    assert "2.0 s wall" in ledger_line(measured)
