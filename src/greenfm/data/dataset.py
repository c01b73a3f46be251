"""``ImageDataset``: manifest rows -> normalised tensors, from a cache or by decoding.

Each item is ``{"image": float32 (C, H, W), "labels": float32 (K,), "index": int}``
with labels NaN where unknown and -1 where uncertain, exactly as in the
manifest. Pixels go through one path either way: ``greenfm.data.decode`` (read
the file, ``to_contract``) builds the cache and serves the uncached dataset, so
the two give identical images; augmentation then acts on the stored
uint8/uint16 tensor and ``normalize`` makes the model input.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from greenfm.data.contract import (
    PIXEL_FIELDS,
    Contract,
    check_compatible,
    check_first_batch,
    fit_to_size,
    normalize,
)
from greenfm.data.decode import decode_to_contract
from greenfm.data.manifest import Manifest, load_manifest
from greenfm.errors import BadInputError, ConfigError

if TYPE_CHECKING:
    from greenfm.data.cache import CacheStore

log = logging.getLogger(__name__)


class ImageDataset(Dataset):
    """Images and labels of a manifest, preprocessed per a ``Contract``.

    With ``cache`` (a ``CacheStore`` built from this manifest or a superset of
    it) items are read from the memory-mapped store and nothing is decoded;
    rows skipped as unreadable when the cache was built are left out, with a
    warning. ``augment`` is applied to the stored uint8/uint16 tensor before
    normalisation. ``labels=False`` leaves the ``"labels"`` key out. ``"index"``
    is the item's row in ``dataset.manifest`` (the given manifest less any
    skipped rows), which also holds ``id`` and ``patient_id``.

    ``normalized=False`` yields the stored uint8/uint16 tensor instead: 4-12x
    fewer bytes through the loader and host-to-GPU copy; apply
    ``normalize(batch, contract)`` on the device.
    """

    def __init__(
        self,
        manifest: Manifest | str | Path,
        contract: Contract,
        *,
        cache: CacheStore | None = None,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        labels: bool = True,
        findings: Sequence[str] | None = None,
        normalized: bool = True,
    ):
        if contract.is_volume and not getattr(self, "serves_volumes", False):
            raise ConfigError("a volume contract (a 3-entry size) needs greenfm.data.volume_dataset.VolumeDataset")
        if not isinstance(manifest, Manifest):
            manifest = load_manifest(manifest)
        self.contract = contract
        self.augment = augment
        self.normalized = normalized
        self.findings = list(findings) if findings is not None else list(manifest.findings)
        self.cache = cache
        keep = np.arange(len(manifest))
        self._rows: np.ndarray | None = None
        if cache is not None:
            check_compatible(contract, cache.contract, f"cache {cache.path}", fields=PIXEL_FIELDS)
            keep, self._rows = _rows_in_cache(manifest, cache)
        self.manifest = manifest if len(keep) == len(manifest) else manifest.subset(_mask(keep, len(manifest)))
        # NumPy string arrays, not lists: forked DataLoader workers then share them
        # without copy-on-write page copies from reference counting.
        self.paths = self.manifest.table["path"].to_numpy(dtype=str)
        self.ids = self.manifest.table["id"].to_numpy(dtype=str)
        self.patient_ids = self.manifest.table["patient_id"].to_numpy(dtype=str)
        # A writable copy: torch.from_numpy warns on (and must not share) a read-only pandas buffer.
        self._labels = np.array(self.manifest.labels(self.findings)) if labels else None

    def __len__(self) -> int:
        return len(self.paths)

    def pixels(self, index: int) -> torch.Tensor:
        """The stored uint8/uint16 tensor (C, H, W) of one item, before augmentation."""
        if self._rows is not None:
            array = self.cache[int(self._rows[index])]
        else:
            array = decode_to_contract(str(self.paths[index]), self.contract)
        return torch.from_numpy(np.ascontiguousarray(array))

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._items([index], self.pixels(index).unsqueeze(0))[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Several items at once (the DataLoader's batched fetch), equal to ``[self[i] for i in indices]``.

        From a cache this is one read of the memory map and one ``normalize`` for the
        whole batch instead of one per image, which is most of the data path's cost.
        """
        if self._rows is None:
            return [self[i] for i in indices]
        return self._items(indices, torch.from_numpy(self.cache.take(self._rows[np.asarray(indices, dtype=np.int64)])))

    def _items(self, indices: Sequence[int], pixels: torch.Tensor) -> list[dict[str, Any]]:
        """Items from their stored pixels (B, C, H, W): augmented one by one, normalised together."""
        if self.augment is not None:
            pixels = torch.stack([self.augment(x) for x in pixels])
        pixels = fit_to_size(pixels, self.contract)  # a cache kept at the contract's source_size
        images = normalize(pixels, self.contract) if self.normalized else pixels
        items = []
        for k, index in enumerate(indices):
            item: dict[str, Any] = {"image": images[k], "index": int(index)}
            if self._labels is not None:
                item["labels"] = torch.from_numpy(self._labels[index])
            items.append(item)
        return items


def _rows_in_cache(manifest: Manifest, cache: CacheStore) -> tuple[np.ndarray, np.ndarray]:
    """Manifest positions present in the cache (matched by image path), and their item indices in it."""
    index_of = cache.index_of
    paths = manifest.table["path"].astype(str).tolist()
    rows = np.array([index_of.get(p, -1) for p in paths], dtype=np.int64)
    missing = rows < 0
    if missing.any():
        skipped = set(cache.skipped_paths)
        unknown = [p for p, m in zip(paths, missing) if m and p not in skipped]
        if unknown:
            raise BadInputError(
                f"{len(unknown)} manifest row(s) are not in the cache, e.g. {unknown[0]}; "
                "the cache was built from another manifest: rebuild it with `greenfm data cache`",
                source=str(cache.path),
            )
        log.warning("%d row(s) skipped as unreadable when the cache was built are left out", int(missing.sum()))
    keep = np.flatnonzero(~missing)
    return keep, rows[keep]


def _mask(keep: np.ndarray, n: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[keep] = True
    return mask


def check_batch_against_contract(dataset: Any, images: Any, *, what: str = "first batch") -> str | None:
    """Warn when a batch drawn from ``dataset`` does not look normalised per its contract.

    Training and embedding loops call this on their first batch; a dataset without
    a ``contract`` attribute (or a non-tensor batch) is not checked.
    """
    contract = getattr(dataset, "contract", None)
    if contract is None or not isinstance(images, torch.Tensor) or not images.is_floating_point():
        return None
    return check_first_batch(images, contract, what=what)
