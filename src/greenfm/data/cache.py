"""Decode-once cache: every image decoded and resized once into a memory-mapped array.

Layout of one cache, ``<cache_root>/<manifest hash>-<contract pixel fingerprint>/``::

    pixels.npy      (N, C, H, W) uint8 or uint16, opened with mmap; volumes (N, C, D, H, W)
                    at the contract's pad_size, uint16 (HU windows) or float16 (z-scored MRI)
    index.parquet   id, path, row (row of pixels.npy) for every usable image
    meta.json       format, contract, manifest hash, shape, skipped rows, timings

The folder name changes when the manifest or any pixel-deciding field of the
contract changes, so a stale cache is never picked up; mean/std are applied
when reading, so contracts differing only there share one cache. A build
writes into ``.building-<key>-<pid>-<tag>/`` and renames it into place only
when complete, so an interrupted build is never used; the next build removes
leftovers whose process is gone.

Volumes (a volume contract, ``greenfm.data.contract``) go through the same build: each
is decoded, reoriented, resampled, intensity-mapped and padded / centre-cropped to
``pad_size`` once (``greenfm.data.volumes.volume_to_stored``); the dataset crops to
``size`` when it reads. They are decoded a few per worker task, as each costs as much
as thousands of 2-D images.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from greenfm.data.contract import PIXEL_FIELDS, Contract, check_compatible
from greenfm.data.decode import decode_to_contract
from greenfm.data.manifest import Manifest, load_manifest
from greenfm.io_safety import NO_SPACE_ERRNOS, disk_full, human_bytes, is_disk_full
from greenfm.errors import BadInputError

CACHE_FORMAT = 1
PIXELS, INDEX, META = "pixels.npy", "index.parquet", "meta.json"
BUILDING_PREFIX = ".building-"
REPLACED_PREFIX = ".replaced-"
_CHUNK = 64  # images per worker task: small enough for a live progress bar
_MIN_IMAGES_FOR_POOL = 2 * _CHUNK  # below this, starting processes costs more than it saves
_VOLUME_CHUNK = 2  # volumes per worker task: each takes tenths of a second to seconds
_MIN_VOLUMES_FOR_POOL = 16  # each worker imports MONAI first (seconds)


def default_cache_root() -> Path:
    """Where caches go unless a run names a root: ``$GREENFM_CACHE_DIR``, else ``~/.cache/greenfm``."""
    return Path(os.environ.get("GREENFM_CACHE_DIR", Path.home() / ".cache" / "greenfm"))


@dataclass(frozen=True)
class Skipped:
    """A manifest row whose image could not be decoded."""

    row: int
    id: str
    path: str
    reason: str


@dataclass
class CacheStore:
    """A built cache: ``store[i]`` is the stored (C, H, W) uint8/uint16 array of item ``i`` ((C, D, H, W) for volumes)."""

    path: Path
    meta: dict[str, Any]
    ids: list[str]
    paths: list[str]
    rows: np.ndarray
    _pixels: np.ndarray | None = field(default=None, repr=False)
    _index_of: dict[str, int] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> np.ndarray:
        return np.array(self.pixels[self.rows[i]])

    def take(self, items: np.ndarray) -> np.ndarray:
        """The stored arrays of several items at once, (B, C, H, W): one read of the memory map."""
        return np.take(self.pixels, self.rows[np.asarray(items, dtype=np.int64)], axis=0)

    @property
    def pixels(self) -> np.ndarray:
        """The whole (N, C, H, W) array, memory-mapped read-only (opened lazily, per process)."""
        if self._pixels is None:
            self._pixels = _open_pixels(self.path, self.meta)
        return self._pixels

    @property
    def contract(self) -> Contract:
        return Contract.from_dict(self.meta["contract"], source=str(self.path / META))

    @property
    def manifest_hash(self) -> str:
        return str(self.meta["manifest_hash"])

    @property
    def skipped_paths(self) -> list[str]:
        return [s["path"] for s in self.meta.get("skipped", [])]

    @property
    def index_of(self) -> dict[str, int]:
        """Absolute image path -> item index (ids alone may repeat across manifests)."""
        if self._index_of is None:
            self._index_of = {p: n for n, p in enumerate(self.paths)}
        return self._index_of

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers re-open the memmap rather than receive a pickled copy of it.
        return self.__dict__ | {"_pixels": None}


def cache_key(manifest: Manifest, contract: Contract) -> str:
    """The folder name of the cache of this manifest under this contract."""
    return f"{manifest.hash}-{contract.pixel_fingerprint}"


def build_cache(
    manifest: Manifest | str | Path,
    contract: Contract,
    cache_root: str | Path,
    *,
    workers: int | None = None,
    progress: bool = True,
    skip_bad: bool = False,
    force: bool = False,
) -> CacheStore:
    """Decode every image of ``manifest`` once into ``cache_root``; return the store.

    An existing complete cache for the same manifest and contract is reused
    unless ``force``. ``workers`` (default: usable cores) decode in parallel
    when there are enough images. Undecodable images stop the build with one
    line naming them, or with ``skip_bad`` are left out and listed in
    ``meta.json``.
    """
    manifest = _as_manifest(manifest, skip_bad)
    root = Path(cache_root)
    root.mkdir(parents=True, exist_ok=True)
    key = cache_key(manifest, contract)
    final = root / key
    if not force:
        existing = _open_if_complete(final)
        if existing is not None:
            return existing
    _remove_abandoned_builds(root, key)

    started = time.perf_counter()
    tmp = root / f"{BUILDING_PREFIX}{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        table = manifest.table
        n = len(table)
        shape = (n, contract.stored_channels, *contract.stored_size)  # source_size when set
        _check_free_space(root, int(np.prod(shape)) * contract.dtype.itemsize)
        np.lib.format.open_memmap(tmp / PIXELS, mode="w+", dtype=contract.dtype, shape=shape).flush()
        _allocate(tmp / PIXELS)  # a full disk fails here, not as SIGBUS in a worker writing the memmap
        paths = table["path"].astype(str).tolist()
        n_workers = _worker_count(workers, n, volumes=contract.is_volume)
        failures = _decode_all(paths, contract, tmp / PIXELS, n_workers, progress)
        skipped = [Skipped(r, str(table["id"].iat[r]), paths[r], why) for r, why in sorted(failures)]
        if skipped and not skip_bad:
            shown = "; ".join(f"{s.path}: {s.reason}" for s in skipped[:3])
            what = "volumes" if contract.is_volume else "images"
            raise BadInputError(
                f"{len(skipped)} of {n} {what} cannot be decoded: {shown} (use --skip-bad to skip them)"
            )
        good = np.setdiff1d(np.arange(n), [s.row for s in skipped])
        ids = table["id"].astype(str).to_numpy()
        index = pd.DataFrame({"id": ids[good], "path": np.asarray(paths)[good], "row": good})
        index.to_parquet(tmp / INDEX, index=False)
        meta = _meta(manifest, contract, key, shape, skipped, n_workers, time.perf_counter() - started)
        _write_json(tmp / META, meta)
        _move_into_place(tmp, final)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, (OSError, RuntimeError)) and is_disk_full(exc):
            raise disk_full(root, what=f"the cache {key}") from None
        raise
    return open_cache(final)


def open_cache(
    path: str | Path,
    *,
    manifest: Manifest | None = None,
    contract: Contract | None = None,
    missing_ok: bool = False,
) -> CacheStore | None:
    """Open a complete cache folder, or the one for ``manifest`` + ``contract`` under a cache root.

    Checks the contract's pixel fields and the manifest hash when given.
    An absent or incomplete cache raises ``BadInputError`` (or returns None
    with ``missing_ok``).
    """
    path = Path(path)
    if not (path / META).exists() and manifest is not None and contract is not None:
        path = path / cache_key(manifest, contract)
    store = _open_if_complete(path)
    if store is None:
        if missing_ok:
            return None
        raise BadInputError("no complete cache here; build it with `greenfm data cache`", source=str(path))
    if contract is not None:
        check_compatible(contract, store.contract, f"cache {path}", fields=PIXEL_FIELDS)
    if manifest is not None and store.manifest_hash != manifest.hash:
        raise BadInputError(
            f"cache was built from another manifest (hash {store.manifest_hash}, this one {manifest.hash}); "
            "rebuild it with `greenfm data cache`",
            source=str(path),
        )
    return store


# -- building ------------------------------------------------------------------


def _decode_all(
    paths: list[str], contract: Contract, pixels_path: Path, workers: int, progress: bool
) -> list[tuple[int, str]]:
    size = _VOLUME_CHUNK if contract.is_volume else _CHUNK
    chunks = [(start, paths[start : start + size]) for start in range(0, len(paths), size)]
    failures: list[tuple[int, str]] = []
    with _ProgressBar(len(paths), progress, "decoding volumes" if contract.is_volume else "decoding images") as advance:
        if workers <= 1:
            for start, chunk in chunks:
                failures += _decode_chunk(start, chunk, contract, pixels_path)
                advance(len(chunk))
        else:
            pool = ProcessPoolExecutor(max_workers=workers, initializer=_init_worker)
            try:
                futures = {pool.submit(_decode_chunk, s, c, contract, pixels_path): len(c) for s, c in chunks}
                for future in as_completed(futures):
                    failures += future.result()
                    advance(futures[future])
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)  # Ctrl-C: stop now, not after every chunk
                raise
            pool.shutdown()
    return failures


def _decode_chunk(start: int, paths: list[str], contract: Contract, pixels_path: Path) -> list[tuple[int, str]]:
    """Decode ``paths`` into rows ``start...`` of the memory-mapped array (in a worker or in-process)."""
    pixels = np.load(pixels_path, mmap_mode="r+")
    failures = []
    for offset, path in enumerate(paths):
        try:
            pixels[start + offset] = decode_to_contract(path, contract)
        except BadInputError as err:
            failures.append((start + offset, str(err).removeprefix(f"{path}: ")))
    pixels.flush()
    del pixels
    return failures


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # one process per core; intra-op threads would oversubscribe


def _worker_count(workers: int | None, n: int, *, volumes: bool = False) -> int:
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, int(workers)) if n >= (_MIN_VOLUMES_FOR_POOL if volumes else _MIN_IMAGES_FOR_POOL) else 1


class _ProgressBar:
    """A rich progress bar when asked for, else a no-op; yields ``advance(n)``."""

    def __init__(self, total: int, enabled: bool, what: str = "decoding images"):
        self.total, self.enabled, self._bar, self.what = total, enabled, None, what

    def __enter__(self):
        if not self.enabled:
            return lambda n: None
        from rich.progress import Progress

        self._bar = Progress(transient=True)
        self._bar.start()
        task = self._bar.add_task(self.what, total=self.total)
        return lambda n: self._bar.advance(task, n)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()


def _meta(manifest: Manifest, contract: Contract, key: str, shape: tuple[int, ...], skipped: list[Skipped],
          workers: int, seconds: float) -> dict[str, Any]:
    from greenfm import __version__

    return {
        "format": CACHE_FORMAT,
        "complete": True,
        "key": key,
        "greenfm_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "manifest_hash": manifest.hash,
        "manifest_source": str(manifest.source) if manifest.source else None,
        "manifest_problems": len(manifest.problems),  # rows dropped when the manifest was loaded
        "contract": contract.to_dict(),
        "pixel_fingerprint": contract.pixel_fingerprint,
        "shape": list(shape),
        "dtype": str(contract.dtype),
        "n_images": shape[0] - len(skipped),
        "n_skipped": len(skipped),
        "skipped": [s.__dict__ for s in skipped],
        "workers": workers,
        "build_seconds": round(seconds, 3),
    }


def _move_into_place(tmp: Path, final: Path) -> None:
    if final.exists():  # forced rebuild: swap, then drop the old one
        old = final.with_name(f"{REPLACED_PREFIX}{final.name}-{uuid.uuid4().hex[:8]}")
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)


def _remove_abandoned_builds(root: Path, key: str) -> None:
    """Delete leftovers of builds of ``key`` whose process no longer runs (crashed or killed)."""
    for leftover in root.glob(f"{BUILDING_PREFIX}{key}-*"):
        pid = _pid_of(leftover.name, key)
        if pid is None or not _alive(pid):
            shutil.rmtree(leftover, ignore_errors=True)
    for leftover in root.glob(f"{REPLACED_PREFIX}{key}-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _pid_of(name: str, key: str) -> int | None:
    pid = name.removeprefix(f"{BUILDING_PREFIX}{key}-").split("-")[0]
    return int(pid) if pid.isdigit() else None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a leftover of this very process is from an earlier, failed build
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _check_free_space(root: Path, needed: int) -> None:
    free = shutil.disk_usage(root).free
    if needed > free:
        raise BadInputError(
            f"the cache needs {human_bytes(needed)} but only {human_bytes(free)} are free", source=str(root)
        )


def _allocate(path: Path) -> None:
    """Reserve the file's blocks now (POSIX); where the file system cannot, writes find out later."""
    with open(path, "r+b") as handle:
        size = os.fstat(handle.fileno()).st_size
        try:
            os.posix_fallocate(handle.fileno(), 0, size)
        except (AttributeError, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS:
                raise


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())


# -- opening -------------------------------------------------------------------


def _open_if_complete(path: Path) -> CacheStore | None:
    """The store at ``path`` if its build finished, else None."""
    try:
        meta = json.loads((path / META).read_text())
        if not meta.get("complete") or meta.get("format") != CACHE_FORMAT:
            return None
        index = pd.read_parquet(path / INDEX)
        _open_pixels(path, meta)  # validates the array's shape and dtype against meta
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        return None
    return CacheStore(path, meta, index["id"].astype(str).tolist(), index["path"].astype(str).tolist(),
                      index["row"].to_numpy(dtype=np.int64))


def _open_pixels(path: Path, meta: dict[str, Any]) -> np.ndarray:
    pixels = np.load(path / PIXELS, mmap_mode="r")
    if list(pixels.shape) != list(meta["shape"]) or str(pixels.dtype) != meta["dtype"]:
        raise ValueError(f"{PIXELS} holds {pixels.shape} {pixels.dtype}; meta.json says {meta['shape']} {meta['dtype']}")
    return pixels


def _as_manifest(manifest: Manifest | str | Path, skip_bad: bool) -> Manifest:
    return manifest if isinstance(manifest, Manifest) else load_manifest(manifest, skip_bad=skip_bad)


def iter_batches(store: CacheStore, batch_size: int) -> Iterator[np.ndarray]:
    """Stored pixels in row order, ``batch_size`` at a time (for embedding a whole cache)."""
    for start in range(0, len(store), batch_size):
        yield store.pixels[store.rows[start : start + batch_size]]
