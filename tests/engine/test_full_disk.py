"""A full disk (ENOSPC / EDQUOT) in any verb that writes: one line, no partial file, the old file intact."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch
from engine_toy import ToyData, ToyMethod, toy_config

from greenfm.engine import fit
from greenfm.engine.checkpoint import save_exported
from greenfm.engine.lock import LOCK_NAME
from greenfm.engine.run_dir import MetricsLog, RunDir
from greenfm.errors import GreenfmError
from greenfm.io_safety import DiskFullError, human_bytes


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if ".tmp" in p.name)


def _one_line(error: BaseException) -> str:
    message = str(error)
    assert isinstance(error, GreenfmError) and "\n" not in message, message
    return message


def test_a_checkpoint_write_that_fills_the_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    fit(ToyMethod(), ToyData(32), toy_config(epochs=2), tmp_path)
    last = tmp_path / "checkpoints" / "last.ckpt"
    before = last.read_bytes()

    def torn_save(obj, handle):  # the low-level write of the checkpoint: half a file, then ENOSPC
        handle.write(b"PK\x03\x04 half a zip")
        _no_space()

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(DiskFullError) as caught:
        fit(ToyMethod(), ToyData(32), toy_config(epochs=3), tmp_path, resume=True)
    monkeypatch.undo()
    message = _one_line(caught.value)
    assert str(tmp_path / "checkpoints") in message and "last.ckpt" in message
    assert f"needs about {human_bytes(len(before))}" in message and "free" in message
    assert last.read_bytes() == before and not _leftovers(tmp_path)
    assert not (tmp_path / LOCK_NAME).exists()
    assert fit(ToyMethod(), ToyData(32), toy_config(epochs=3), tmp_path, resume=True).steps == 6


def test_a_quota_error_in_the_export_leaves_the_old_export(tmp_path, monkeypatch):
    import safetensors.torch

    target = save_exported(torch.nn.Linear(4, 4), tmp_path / "exported" / "last.safetensors", metadata={})
    before = target.read_bytes()

    def torn(module, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    monkeypatch.setattr(safetensors.torch, "save_model", torn)
    with pytest.raises(DiskFullError, match="quota") as caught:
        save_exported(torch.nn.Linear(4, 4), target, metadata={})
    assert "needs about 80 B" in _one_line(caught.value)
    assert target.read_bytes() == before and not _leftovers(tmp_path)


def test_a_metrics_row_cut_by_a_full_disk_is_removed(tmp_path, monkeypatch):
    log = MetricsLog(RunDir(tmp_path), enabled=True)
    log.write({"type": "step", "step": 1, "loss": 1.0})
    real_open = open

    class Torn:
        def __init__(self, path, mode):
            self.handle = real_open(path, mode)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, text):
            self.handle.write(text[:7])
            self.handle.flush()
            _no_space()

    monkeypatch.setattr("greenfm.engine.run_dir.open", lambda path, mode: Torn(path, mode), raising=False)
    with pytest.raises(DiskFullError, match="metrics.jsonl"):
        log.write({"type": "step", "step": 2, "loss": 0.5})
    monkeypatch.undo()
    assert (tmp_path / "metrics.jsonl").read_text() == '{"type": "step", "step": 1, "loss": 1.0}\n'


def test_train_log_on_a_full_disk_stops_training_with_one_line(tmp_path, monkeypatch):
    import logging

    def full_emit(self, record):
        try:
            _no_space()
        except OSError:
            self.handleError(record)

    monkeypatch.setattr(logging.FileHandler, "emit", full_emit)
    with pytest.raises(DiskFullError, match="train.log"):
        fit(ToyMethod(), ToyData(16), toy_config(epochs=1), tmp_path)
    assert not (tmp_path / LOCK_NAME).exists()


def test_manifests_images_and_embeddings_leave_no_partial_file(tmp_path, monkeypatch):
    from greenfm.data.embeddings import Embeddings, write_embeddings
    from greenfm.data.manifest import write_table
    from greenfm.data.phantoms.writer import generate_phantoms

    monkeypatch.setattr(pd.DataFrame, "to_csv", lambda self, path, **kw: (Path(path).write_text("path,pa"), _no_space()))
    with pytest.raises(DiskFullError, match="labeled.csv"):  # the writer behind `label`, `data import`, `data split`
        write_table(pd.DataFrame({"path": ["a.png"]}), tmp_path / "reports.labeled.csv")
    monkeypatch.undo()
    assert not list(tmp_path.iterdir())

    import pyarrow.parquet as pq

    monkeypatch.setattr(pq, "write_table", lambda table, path, **kw: (Path(path).write_bytes(b"PAR1"), _no_space()))
    vectors = torch.zeros(2, 3).numpy()
    ids = pd.Series(["a", "b"]).to_numpy()
    with pytest.raises(DiskFullError, match="embeddings.parquet"):
        write_embeddings(tmp_path / "embeddings.parquet", Embeddings(ids, ids, ids, vectors, {}))
    monkeypatch.undo()
    assert not list(tmp_path.iterdir())

    real_write_bytes = Path.write_bytes
    calls = []

    def fills_up(self, data):  # the 3rd file fills the disk
        calls.append(self)
        if len(calls) >= 3:
            real_write_bytes(self, b"")
            _no_space()
        return real_write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", fills_up)
    with pytest.raises(DiskFullError) as caught:
        generate_phantoms(tmp_path / "phantoms", n_patients=3, size=32, workers=1)
    monkeypatch.undo()
    _one_line(caught.value)
    images = list((tmp_path / "phantoms").rglob("*.png"))
    assert images and all(p.stat().st_size > 0 for p in images)  # the written ones are whole, no 0-byte PNG
    assert not _leftovers(tmp_path)


def test_the_cache_names_small_sizes_readably(tmp_path, monkeypatch):
    from greenfm.data import cache

    monkeypatch.setattr(cache.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 12_345))
    with pytest.raises(GreenfmError) as caught:
        cache._check_free_space(tmp_path, 4_200_000)
    assert "needs 4.2 MB but only 12.3 KB are free" in str(caught.value)
    assert human_bytes(0) == "0 B" and human_bytes(1.5e9) == "1.5 GB" and human_bytes(999) == "999 B"


def _tmpfs(folder: Path, size: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    return done.returncode == 0


def test_a_real_full_tmpfs_gives_one_line_and_leaves_no_partial_checkpoint(tmp_path):
    small = tmp_path / "small"
    if not _tmpfs(small, "2m"):
        pytest.skip("needs root and a mountable tmpfs")
    try:
        class Big(ToyMethod):  # a 4 MB buffer: its checkpoint cannot fit in 2 MB
            def __init__(self):
                super().__init__()
                self.register_buffer("ballast", torch.zeros(1_000_000))

        with pytest.raises(DiskFullError) as caught:
            fit(Big(), ToyData(16), toy_config(epochs=1), small / "run")
        assert str(small / "run" / "checkpoints") in _one_line(caught.value)
        assert not _leftovers(small) and not (small / "run" / "checkpoints" / "last.ckpt").exists()
        assert not (small / "run" / LOCK_NAME).exists()
    finally:
        subprocess.run(["umount", str(small)], capture_output=True)
