"""Fine-tuning's default training configuration follows MED-PEFT and shrinks with the data."""

from __future__ import annotations

import pytest

from greenfm.adapt.train_defaults import build_train_config, default_batch_size, epoch_repeats


def test_defaults_follow_med_peft_and_shrink_with_the_data():
    big, small = build_train_config("lora", 4000), build_train_config("lora", 20)
    assert big.batch_size == 64 and big.lr == pytest.approx(3e-3 * 64 / 256) and big.min_lr == 1e-6
    assert big.weight_decay == 0.05 and big.schedule == "cosine" and big.schedule_interval == "step"
    steps = -(-4000 // 64)
    assert big.warmup == min(5 * steps, int(0.1 * big.epochs * steps))
    assert small.batch_size == default_batch_size(20) == 8
    assert epoch_repeats(20) == 4 and small.epochs * (4 * 20 // 8) >= 300  # 20 images, 10 steps an epoch
    assert build_train_config("lora", 4000, {"max_steps": 130}).epochs == 3
    assert build_train_config("full", 4000).lr < big.lr < build_train_config("linear", 4000).lr
    assert build_train_config("full", 4000, {"lr": 1e-3, "epochs": 3}).lr == 1e-3
