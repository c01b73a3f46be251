"""Fine-tuning's default training configuration: MED-PEFT's rules (METHODS 6.2), scaled to small data.

Per mode, for ``n_train`` training images; every value can be overridden:

==============  =========================================================================
batch           64, but at most a quarter of the training images (at least 8), so a
                tiny subset still takes several steps per epoch
lr              base lr x batch / 256 (MED-PEFT's ``blr`` rule); base lr ``linear`` 1e-2,
                ``lora`` 3e-3 (MED-PEFT's recommended CXR-MAE LoRA value at 1% and 100%),
                ``full`` 5e-4 (its released full fine-tuning baseline); meant for pretrained
                backbones: a random init needs ~1e-3 (docs/results.md)
epochs          enough for ~300 optimiser steps, within 20-100 (MED-PEFT trains
                100-400 epochs on far larger sets); ``max_steps`` alone sets a step budget.
                A subset under 64 images is repeated within an epoch (an epoch holds at
                least 64 draws), so validation and checkpoints come every few steps
checkpoints     about ten per run (every ``ceil(epochs / 10)`` epochs)
schedule        per step: linear warm-up from 0 over 5 epochs (at most 10% of the
                steps), then half-cosine to 1e-6
optimiser       AdamW, weight decay 0.05 on >= 2-D tensors, layer decay 0.65
loss            BCE-with-logits per finding (uncertain / unknown labels masked);
                cross-entropy for one-hot multi-class manifests
==============  =========================================================================
"""

from __future__ import annotations

import math
from typing import Any

from greenfm.config import build_config
from greenfm.engine.train_config import TrainConfig
from greenfm.errors import ConfigError

MODE_BASE_LR = {"linear": 1e-2, "lora": 3e-3, "full": 5e-4}
REFERENCE_BATCH = 256
MAX_BATCH, MIN_BATCH, MIN_STEPS_PER_EPOCH = 64, 8, 4
MIN_EPOCH_IMAGES = 64  # smaller subsets are repeated within an epoch
TARGET_STEPS, EPOCH_RANGE = 300, (20, 100)
WARMUP_EPOCHS, WARMUP_MAX_SHARE, MIN_LR = 5, 0.1, 1e-6
AUTO_AUGMENT = {"fundus": "rfg", "photo": "rfg", "xray": "cxr", "us": "cxr"}


def default_batch_size(n_train: int) -> int:
    """64, at most a quarter of the training images, at least 8 (never above n_train)."""
    return max(1, min(MAX_BATCH, n_train, max(MIN_BATCH, math.ceil(n_train / MIN_STEPS_PER_EPOCH))))


def epoch_repeats(n_train: int) -> int:
    """How often a subset is repeated within one epoch, so that an epoch holds >= 64 draws."""
    return max(1, math.ceil(MIN_EPOCH_IMAGES / max(n_train, 1)))


def build_train_config(mode: str, n_train: int, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The per-mode MED-PEFT defaults (module docstring) for ``n_train`` images, then ``overrides``."""
    if mode not in MODE_BASE_LR:
        raise ConfigError(f"unknown mode {mode!r}; choose one of {', '.join(MODE_BASE_LR)}")
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    batch = int(overrides.get("batch_size", default_batch_size(n_train)))
    steps_per_epoch = max(1, math.ceil(n_train * epoch_repeats(n_train) / max(batch, 1)))
    if "epochs" in overrides:
        epochs = int(overrides["epochs"])
    elif overrides.get("max_steps"):  # a step budget alone: as many epochs as it takes
        epochs = math.ceil(int(overrides["max_steps"]) / steps_per_epoch)
    else:
        epochs = min(max(math.ceil(TARGET_STEPS / steps_per_epoch), EPOCH_RANGE[0]), EPOCH_RANGE[1])
    total = min(epochs * steps_per_epoch, int(overrides.get("max_steps") or epochs * steps_per_epoch))
    lr = float(overrides.get("lr", MODE_BASE_LR[mode] * batch / REFERENCE_BATCH))
    defaults = {
        "epochs": epochs,
        "batch_size": batch,
        "lr": lr,
        "min_lr": min(MIN_LR, lr),
        "warmup": min(WARMUP_EPOCHS * steps_per_epoch, int(WARMUP_MAX_SHARE * total)),
        "warmup_lr_init": 0.0,
        "weight_decay": 0.05,
        "schedule": "cosine",
        "schedule_interval": "step",
        "num_workers": None,  # chosen from the machine by the engine (greenfm.engine.threads)
        "log_every_steps": max(1, min(10, steps_per_epoch)),
        "checkpoint_every_epochs": max(1, math.ceil(epochs / 10)),  # tiny subsets run many short epochs
    }
    return build_config(TrainConfig, **{**defaults, **overrides})


def auto_augment(modality: str) -> str:
    """Light geometric augmentation for grey X-ray / ultrasound, RETFound-Green's for colour, else none."""
    return AUTO_AUGMENT.get(modality, "none")
