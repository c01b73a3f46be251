"""Engine hooks of the recipe contract: on_epoch_start at every epoch (resumed ones too), and the
state of a sampler's source (e.g. a curated subset) saved in the checkpoint and restored on resume."""

from __future__ import annotations

import torch
from engine_toy import ToyData, ToyMethod, toy_config
from torch.utils.data import Sampler

from greenfm.engine import fit, load_checkpoint


class SubsetSource(Sampler[int]):
    """Draws a shuffled permutation of ``indices``; its state is the subset."""

    def __init__(self, n: int):
        self.indices = list(range(n))
        self.generator = None

    def __iter__(self):
        order = torch.randperm(len(self.indices), generator=self.generator).tolist()
        return iter([self.indices[i] for i in order])

    def __len__(self) -> int:
        return len(self.indices)

    def state_dict(self) -> dict:
        return {"indices": list(self.indices)}

    def load_state_dict(self, state: dict) -> None:
        self.indices = list(state["indices"])


class CuratingToy(ToyMethod):
    """Keeps the even items from epoch 1 on, deciding at the epoch's start (as curation would)."""

    def __init__(self, source: SubsetSource):
        super().__init__(noise=0.0)
        self.source, self.epochs_started = source, []

    def on_epoch_start(self, epoch: int) -> None:
        self.epochs_started.append(epoch)
        if epoch == 1 and len(self.source.indices) == 32:
            self.source.indices = [i for i in range(32) if i % 2 == 0] * 2  # same length: same steps per epoch


def test_epoch_hook_and_sampler_state_survive_a_resume(tmp_path):
    config = dict(epochs=3, batch_size=8, checkpoint_every_steps=1)
    source = SubsetSource(32)
    first = CuratingToy(source)
    fit(first, ToyData(32, augment=False), toy_config(**config, max_steps=6), tmp_path / "run", sampler=source)
    assert first.epochs_started == [0, 1]
    saved = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert saved["sampler"]["indices"] == [i for i in range(32) if i % 2 == 0] * 2

    fresh = SubsetSource(32)  # a new process starts from the full set ...
    resumed = CuratingToy(fresh)
    fit(resumed, ToyData(32, augment=False), toy_config(**config), tmp_path / "run", resume=True, sampler=fresh)
    assert fresh.indices == saved["sampler"]["indices"]  # ... and gets the subset back from the checkpoint
    assert resumed.epochs_started == [1, 2]  # the resumed epoch starts again, then the next
