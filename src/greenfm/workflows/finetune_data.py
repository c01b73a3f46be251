"""The data side of fine-tuning: a split manifest, its task and the cache every split reads from.

``prepare_data`` loads and checks a manifest (train, val and test splits required),
resolves the task (``greenfm.data.tasks.resolve_task``) and builds the decode-once
cache every split reads from. Shared by ``greenfm finetune`` and
``greenfm evaluate label-efficiency``; what a subset can teach and how fractions are
drawn is ``greenfm.data.tasks``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from greenfm.data.cache import default_cache_root
from greenfm.data.contract import Contract
from greenfm.data.dataset import ImageDataset
from greenfm.data.manifest import Manifest
from greenfm.data.volume_dataset import VolumeDataset
from greenfm.data.tasks import resolve_task, three_splits
from greenfm.models.backbones import Encoder
from greenfm.workflows.inputs import encoder_contract, image_dataset, load_checked_manifest


@dataclass
class FinetuneData:
    """A checked manifest split three ways, its task, and the decode-once cache it reads from."""

    manifest: Manifest  # usable rows only (unreadable images left out with skip_bad)
    splits: dict[str, Manifest]
    task: str  # "multilabel" or "multiclass"
    names: list[str]  # findings (multi-label) or class columns (multi-class)
    contract: Contract
    cache: Any  # CacheStore or None

    def dataset(self, manifest: Manifest, names: Sequence[str], augment=None, *, training: bool = False) -> ImageDataset:
        """The rows of ``manifest`` from the cache; volumes are randomly cropped when ``training``, else centred."""
        if self.contract.is_volume:
            return VolumeDataset(manifest, self.contract, train=training, cache=self.cache, augment=augment,
                                 findings=list(names))  # fmt: skip
        return ImageDataset(manifest, self.contract, cache=self.cache, augment=augment, findings=list(names))


def prepare_data(
    data: str | Path | Manifest,
    encoder: Encoder,
    *,
    findings: Sequence[str] | None = None,
    task: str = "auto",
    contract: str | None = None,
    modality: str | None = None,
    cache: str | Path | None = None,
    skip_bad: bool = False,
) -> FinetuneData:
    """Load and check the manifest, resolve the task and build (or reuse) the image cache."""
    manifest = load_checked_manifest(data, skip_bad=skip_bad)
    splits = three_splits(manifest)
    task, names = resolve_task(manifest, findings, task)
    the_contract = encoder_contract(encoder, contract, modality=modality, data=manifest)
    whole = image_dataset(manifest, the_contract, cache_root=cache or default_cache_root(), skip_bad=skip_bad)
    if len(whole) < len(manifest):  # unreadable images left out when the cache was built
        manifest = whole.manifest
        splits = three_splits(manifest)
    return FinetuneData(manifest, splits, task, names, the_contract, whole.cache)


def absolute_path(path: str | Path) -> str:
    """An existing path made absolute (saved configs survive a change of directory); names kept as given."""
    candidate = Path(str(path)).expanduser()
    return str(candidate.resolve()) if candidate.exists() else str(path)
