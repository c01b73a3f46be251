"""The demo's settings: every size, length and knob of one run (``FULL``, and ``QUICK`` for tests)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class DemoSetting:
    """Every size, length and knob of one demo run (saved to ``demo_setting.json``)."""

    name: str
    source_site: str = "A"
    target_site: str = "B"
    source_patients: int = 3000  # a ViT from random weights needs images more than epochs (docs/results.md)
    target_patients: int = 2000
    phantom_size: int = 64  # pixels rendered; the contract resizes to image_size
    image_size: int = 64  # the findings at full resolution; patch 16 keeps 16 tokens, the cost of 32 px at patch 8
    patch_size: int = 16
    width: int = 64
    depth: int = 4
    heads: int = 4
    warm_start_epochs: int = 8
    warm_start_batch: int = 32
    warm_start_lr: float = 2e-3
    pretrain_epochs: int = 6
    pretrain_batch: int = 64
    pretrain_lr: float = 1e-3
    val: float = 0.1
    test: float = 0.3
    bootstrap: int = 1000
    seed: int = 0
    track_energy: bool = True
    label_efficiency: bool = True
    label_fractions: tuple[float, ...] = (0.01, 0.1, 1.0)
    finetune_steps: int = 100
    finetune_batch: int = 32
    finetune_lr: float = 1e-3
    image_text: bool = True
    image_text_epochs: int = 3
    image_text_batch: int = 64
    image_text_lr: float = 1e-3
    greenrfm: bool = True  # the 3-D stage (workflows.demo_greenrfm: its own FULL / QUICK sizes)
    greenrfm_beside: bool = True  # run it in a second process beside stages 1-7 when there are 2+ cores

    @property
    def backbone(self) -> dict[str, Any]:
        """``create_encoder`` arguments of the demo's ViT (DINOv2-shaped: 4 registers, LayerScale)."""
        return {"name": "vit_tiny_test", "img_size": self.image_size, "patch_size": self.patch_size,
                "embed_dim": self.width, "depth": self.depth, "num_heads": self.heads}  # fmt: skip


FULL = DemoSetting(name="full")
QUICK = replace(
    FULL, name="quick", source_patients=24, target_patients=48, phantom_size=32, image_size=32, patch_size=8,
    width=32, depth=2, warm_start_epochs=1, warm_start_batch=16, pretrain_epochs=1, pretrain_batch=16, test=0.4,
    bootstrap=200, track_energy=False, label_fractions=(0.5, 1.0), finetune_steps=2, finetune_batch=8,
    image_text_epochs=1, image_text_batch=16, greenrfm_beside=False,
)  # fmt: skip
