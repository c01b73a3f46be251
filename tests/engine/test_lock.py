"""One writer per run folder: a live owner refuses a second writer; a dead owner's lock is taken over."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import socket
import subprocess
import sys

import pytest
from engine_toy import ToyData, ToyMethod, toy_config

from greenfm.engine import fit
from greenfm.engine.lock import LOCK_NAME, RunLockedError, run_lock


def _hold(run_dir, ready, release):
    with run_lock(run_dir):
        ready.set()
        release.wait(60)


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_second_writer_is_refused_with_one_line_naming_the_owner(tmp_path):
    context = multiprocessing.get_context("fork")
    ready, release = context.Event(), context.Event()
    owner = context.Process(target=_hold, args=(tmp_path, ready, release), daemon=True)
    owner.start()
    try:
        assert ready.wait(30)
        with pytest.raises(RunLockedError) as caught:
            fit(ToyMethod(), ToyData(16), toy_config(epochs=1), tmp_path)
        message = str(caught.value)
        assert "\n" not in message and f"pid {owner.pid}" in message and socket.gethostname() in message
        assert str(tmp_path / LOCK_NAME) in message
        assert not (tmp_path / "checkpoints" / "last.ckpt").exists()  # the refused writer wrote nothing
    finally:
        release.set()
        owner.join(30)
    assert not (tmp_path / LOCK_NAME).exists()  # the owner released it on exit
    assert fit(ToyMethod(), ToyData(16), toy_config(epochs=1), tmp_path).steps == 1


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_log_line(tmp_path, caplog):
    pid = _dead_pid()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
    with caplog.at_level(logging.WARNING, logger="greenfm"):
        assert fit(ToyMethod(), ToyData(16), toy_config(epochs=1), tmp_path).steps == 1
    assert any("stale lock" in r.getMessage() and f"pid {pid}" in r.getMessage() for r in caplog.records)
    assert not (tmp_path / LOCK_NAME).exists()


def test_an_empty_lock_file_left_by_a_crash_is_stale(tmp_path):
    (tmp_path / LOCK_NAME).write_text("")
    with run_lock(tmp_path) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()


def test_a_lock_from_another_host_is_never_taken_over(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "another-node"}))
    with pytest.raises(RunLockedError, match="another-node"):
        fit(ToyMethod(), ToyData(16), toy_config(epochs=1), tmp_path)
    assert (tmp_path / LOCK_NAME).exists()


def test_the_lock_is_released_after_an_error_and_is_reentrant(tmp_path):
    class Broken(ToyMethod):
        def training_step(self, batch):
            raise ValueError("broken recipe")

    with pytest.raises(ValueError, match="broken recipe"):
        fit(Broken(), ToyData(16), toy_config(epochs=1), tmp_path)
    assert not (tmp_path / LOCK_NAME).exists()
    with run_lock(tmp_path):  # a verb holds the lock around fit, which takes it again
        fit(ToyMethod(), ToyData(16), toy_config(epochs=1), tmp_path, resume="auto")
        assert (tmp_path / LOCK_NAME).exists()
    assert not (tmp_path / LOCK_NAME).exists()
