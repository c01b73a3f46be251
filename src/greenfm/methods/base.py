"""The recipe contract: what a pretraining method owns, and what it leaves to the engine.

A recipe is an ``nn.Module`` subclass of :class:`Recipe`, registered by name in
``greenfm.methods.registry``. It owns what only it knows:

- its **towers**: ``towers`` maps each tower name (``image``, ``text``, ...) to its kind;
  the workflow builds each from a :class:`greenfm.models.towers.TowerSpec` (random, a local
  file, a greenfm run or export folder, or a hub name) and passes them to
  :meth:`Recipe.from_towers`; stage chaining (``--init RUN``) loads named towers strictly;
- its **batch**: ``batch_keys`` names what a sample must carry (``image``, ``report``,
  ``labels``); :meth:`collate` turns samples into a batch (tokenisation happens here,
  batched, with the recipe's text tower);
- its **loss**: :meth:`training_step` returns ``{"loss": ..., other scalars}``; a loss
  that does not split per sample (contrastive) sets ``per_sample_loss = False`` and gathers
  negatives over devices with ``self.context.all_gather`` (gradients kept for the local
  slice); the engine refuses gradient accumulation for such a loss;
- its **cost and output**: :meth:`training_flops_per_sample` and :meth:`export_towers`;
- optional **stages** (``stages``; a run trains one) and hooks :meth:`on_epoch_start`,
  :meth:`on_micro_batch`, :meth:`clip_gradients`, :meth:`on_after_optimizer_step`;
- its **recommended start**: :meth:`recommended_init`, what ``pretrain`` loads without ``--init``.

The engine owns devices, precision, schedule, accumulation, checkpoints, resume and the
ledger; workflows only wire a verb's inputs to the recipe and the engine, so a new recipe
touches its own file, one registry line and its tests (``examples/custom_recipe.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import default_collate

from greenfm.config import GreenfmConfig, build_config
from greenfm.errors import ConfigError


class _SingleProcess:
    """The context a recipe has before ``setup`` (or outside the engine): one process."""

    rank, world_size, is_global_zero = 0, 1, True
    device = torch.device("cpu")

    @staticmethod
    def all_gather(tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    @staticmethod
    def all_gather_objects(obj: object) -> list[object]:
        return [obj]

    @staticmethod
    def broadcast(obj: object, src: int = 0) -> object:
        return obj


class RecipeConfig(GreenfmConfig):
    """Base of every recipe's options (``method:`` in a config file)."""


class Recipe(nn.Module):
    """Base class of pretraining recipes; see the module docstring for the contract."""

    name: ClassVar[str] = ""
    Config: ClassVar[type[GreenfmConfig]] = RecipeConfig
    towers: ClassVar[Mapping[str, str]] = {"image": "image"}  # tower name -> kind (image | text)
    batch_keys: ClassVar[Sequence[str]] = ("image",)
    per_sample_loss: ClassVar[bool] = True
    stages: ClassVar[Sequence[str]] = ()
    needs_labels: ClassVar[bool] = False

    def __init__(self, config: GreenfmConfig | Mapping[str, Any] | None = None):
        super().__init__()
        self.config = config if isinstance(config, self.Config) else build_config(self.Config, **dict(config or {}))
        self.context: Any = _SingleProcess()
        self.flags: dict[str, Any] = {}
        self.warnings: list[str] = []

    # --- construction ------------------------------------------------------------------

    @classmethod
    def from_towers(cls, towers: Mapping[str, nn.Module], config: Any = None, **context: Any) -> Recipe:
        """Build the recipe from its named towers. ``context`` carries what the data says
        (``findings``: the label vocabulary, ``stage``: the stage to train)."""
        raise NotImplementedError(f"{cls.__name__} must implement from_towers")

    @classmethod
    def default_train_config(cls, **_: Any) -> dict[str, Any]:
        """The recipe's recommended engine options (a ``TrainConfig`` mapping)."""
        return {}

    @classmethod
    def recommended_init(cls, backbone: str | None = None) -> str:
        """The initial weights ``pretrain`` uses when none are given: random unless the recipe says otherwise."""
        return "random"

    @classmethod
    def check_towers(cls, towers: Mapping[str, nn.Module]) -> None:
        missing = [name for name in cls.towers if name not in towers]
        if missing:
            raise ConfigError(f"recipe '{cls.name}' needs tower(s) {missing}; got {sorted(towers)}")

    # --- engine hooks ------------------------------------------------------------------

    def setup(self, context: Any) -> None:
        """Called by the engine once per process before training: rank, world size, all_gather."""
        self.context = context

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """Samples -> batch; keeps ``batch_keys`` and ``index``. Text recipes tokenise here."""
        keys = [k for k in (*self.batch_keys, "index") if k in samples[0]]
        missing = [k for k in self.batch_keys if k not in samples[0]]
        if missing:
            raise ConfigError(f"recipe '{self.name}' needs batch key(s) {missing}; the dataset gives {sorted(samples[0])}")
        return default_collate([{k: s[k] for k in keys} for s in samples])

    def training_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def on_epoch_start(self, epoch: int) -> None:
        """Called at the start of every epoch (after resume, at the resumed epoch)."""

    def on_micro_batch(self, index: int, count: int) -> None:
        """Called before each of the ``count`` micro-batches of one optimiser step on this rank
        (``index`` 0-based; every rank has the same ``count``), e.g. to treat the global batch's
        last sample (last micro-batch of the last rank) apart."""

    def clip_gradients(self, max_norm: float, clip: Callable[[float], torch.Tensor]) -> torch.Tensor:
        """Clip the gradients by norm and return the norm before clipping; ``clip(max_norm)`` is the
        engine's (optimised parameters only, after unscaling). A recipe overrides this only to
        emulate another clipping rule on request."""
        return clip(max_norm)

    def on_after_optimizer_step(self, step: int) -> None:
        """Called after every optimiser step (``step``: 0-based index of the update just made)."""

    def optimizer_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """Decay on trainable tensors of 2+ dims; 1-D tensors (biases, norms, scales) skip it."""
        decay, no_decay = [], []
        for param in self.parameters():
            if param.requires_grad:
                (decay if param.ndim >= 2 else no_decay).append(param)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    # --- what the recipe reports and exports --------------------------------------------

    def training_flops_per_sample(self, batch: dict[str, Any]) -> tuple[float | None, str]:
        """Training FLOPs per sample and the convention; ``None`` lets the engine count 3 x forward."""
        return None, "3 x forward of training_step (engine count)"

    def export_towers(self) -> dict[str, nn.Module]:
        """The named towers a run exports (training-only parts such as teachers left out)."""
        return {name: getattr(self, name) for name in self.towers if isinstance(getattr(self, name, None), nn.Module)}

    def export_heads(self) -> dict[str, torch.Tensor]:
        """Extra tensors an export keeps beside the towers (projections, temperature); none by default."""
        return {}

    def export_model(self) -> nn.Module:
        """The bare image encoder (what per-epoch evaluation and the engine's FLOP count use)."""
        image = self.export_towers().get("image")
        if image is None:
            raise ConfigError(f"recipe '{self.name}' has no image tower to export")
        return getattr(image, "model", image)
