"""A NaN or Inf loss is caught before the optimiser step: stop names the step and samples, skip counts them."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
from engine_toy import ToyData, ToyMethod, toy_config, weights

from greenfm.engine import fit, load_checkpoint, read_metrics
from greenfm.engine.nonfinite import NonFiniteLossError

POISONED = {5, 17}  # sample indices whose loss is NaN


class Poisoned(ToyMethod):
    """The toy regressor, with a NaN loss for batches holding a poisoned sample."""

    def training_step(self, batch):
        out = super().training_step(batch)
        if any(int(i) in POISONED for i in batch["index"]):
            out["loss"] = out["loss"] * float("nan")
        return out


class WithManifest(ToyData):
    def __init__(self, n):
        super().__init__(n)
        self.manifest = type("M", (), {"table": pd.DataFrame({"id": [f"img-{i:03d}" for i in range(n)]})})()


def test_stop_names_the_step_and_samples_and_leaves_the_last_good_checkpoint(tmp_path):
    class NaNAtStep5(ToyMethod):
        def training_step(self, batch):
            out = super().training_step(batch)
            self.steps = getattr(self, "steps", 0) + torch.is_grad_enabled()  # the FLOP count runs without grad
            if torch.is_grad_enabled() and self.steps == 5:
                out["loss"] = out["loss"] * float("nan")
                self.bad_ids = [f"img-{int(i):03d}" for i in batch["index"]]
            return out

    config = toy_config(epochs=3, batch_size=8, checkpoint_every_steps=2, checkpoint_every_epochs=None)
    method = NaNAtStep5()
    with pytest.raises(NonFiniteLossError) as caught:
        fit(method, WithManifest(32), config, tmp_path)
    message = str(caught.value)
    assert "\n" not in message and "non-finite loss nan at step " in message
    last = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert "at step 5 " in message
    assert last["progress"]["step"] == 4 and f"{tmp_path / 'checkpoints' / 'last.ckpt'} (step 4)" in message
    assert all(i in message for i in method.bad_ids[:8])
    for key, value in last["model"].items():  # the weights in memory are step 4's: step 5 never reached them
        assert torch.equal(method.state_dict()[key], value), key
    assert all(torch.isfinite(v).all() for v in method.state_dict().values() if v.is_floating_point())


def test_skip_keeps_the_weights_and_counts_batches_and_ids(tmp_path):
    config = toy_config(epochs=2, batch_size=8, on_nonfinite="skip")
    method = Poisoned()
    result = fit(method, WithManifest(32), config, tmp_path)
    assert all(torch.isfinite(v).all() for v in method.state_dict().values() if v.is_floating_point())
    skipped = [r for r in (json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines())
               if r["type"] == "nonfinite"]  # fmt: skip
    assert len(skipped) == 4  # 2 poisoned samples x 2 epochs, each in its own batch of 8 out of 4
    assert {i for r in skipped for i in r["ids"]} >= {"img-005", "img-017"}
    assert result.compute["nonfinite_batches_skipped"] == 4
    progress = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["progress"]
    assert progress["nonfinite_skipped"] == 4 and "img-005" in progress["nonfinite_ids"]
    assert progress["samples_trained"] == progress["samples_seen"] - 4 * 8
    assert all(math.isfinite(r["loss"]) for r in read_metrics(tmp_path, "step"))
    assert "non-finite" in (tmp_path / "train.log").read_text()


def test_a_skipped_step_does_not_move_the_weights(tmp_path):
    class AllNaN(ToyMethod):
        def training_step(self, batch):
            out = super().training_step(batch)
            out["loss"] = out["loss"] * float("inf")
            return out

    method = AllNaN()
    before = weights(method)
    fit(method, ToyData(16), toy_config(epochs=1, on_nonfinite="skip"), tmp_path)
    for key, value in weights(method).items():
        if key != "updates":
            assert torch.equal(value, before[key]), key
    assert int(method.updates) == 0  # no optimiser step, so no on_after_optimizer_step either
