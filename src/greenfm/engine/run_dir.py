"""The run folder contract, its ``config.yaml`` and its ``metrics.jsonl`` / TensorBoard log.

::

    RUN_DIR/
      config.yaml          what was asked, plus version, git SHA, manifest hash, seed (write_run_config)
      metrics.jsonl        one JSON object per logged step ({"type": "step"}) and per epoch ({"type": "epoch"})
      train.log            the run's log lines
      tensorboard/         the same scalars, when TensorBoard is installed
      checkpoints/         last.ckpt, step-N.ckpt snapshots, best.ckpt (with select_metric)
      compute.json         the compute ledger
      exported/            the method's export_model() weights (last.safetensors)

Only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import yaml

import greenfm
from greenfm.engine.checkpoint import atomic_write_text
from greenfm.io_safety import DiskFullError, disk_full, disk_full_guard, is_disk_full

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run folder."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def log(self) -> Path:
        return self.root / "train.log"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.ckpt"

    @property
    def compute(self) -> Path:
        return self.root / "compute.json"

    @property
    def exported(self) -> Path:
        return self.root / "exported"


def is_rank_zero() -> bool:
    """True unless a launcher (torchrun, SLURM, Fabric) says this process is not global rank 0."""
    for var in ("RANK", "SLURM_PROCID"):
        if var in os.environ:
            return os.environ[var] == "0"
    return os.environ.get("NODE_RANK", "0") == "0" and os.environ.get("LOCAL_RANK", "0") == "0"


def git_sha() -> str:
    """The commit of greenfm's checkout (or, failing that, of the cwd); "unknown" outside git."""
    for folder in (Path(greenfm.__file__).resolve().parent, Path.cwd()):
        try:
            out = subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10, check=True
            )
            sha = out.stdout.strip()
            if sha:
                dirty = subprocess.run(
                    ["git", "status", "--porcelain", "--untracked-files=no"],
                    cwd=folder,
                    capture_output=True,
                    text=True,
                    timeout=10,
                ).stdout.strip()
                return sha + ("-dirty" if dirty else "")
        except (OSError, subprocess.SubprocessError):
            continue
    return "unknown"


def provenance(*, manifest_hash: str | None, seed: int | None) -> dict[str, Any]:
    return {
        "greenfm_version": greenfm.__version__,
        "git_sha": git_sha(),
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
        "manifest_hash": manifest_hash,
        "seed": seed,
    }


def write_run_config(
    run_dir: str | Path, config_dict: dict[str, Any], *, manifest_hash: str | None, seed: int | None
) -> Path:
    """Write ``RUN_DIR/config.yaml``: ``config_dict`` plus a ``provenance`` section (rank 0 only).

    Call it before ``fit`` with everything the run was given (recipe, data, train
    config), so a run folder says how to reproduce itself.
    """
    path = RunDir(Path(run_dir)).config
    if is_rank_zero():
        data = {**config_dict, "provenance": provenance(manifest_hash=manifest_hash, seed=seed)}
        atomic_write_text(path, yaml.safe_dump(plain_json(data), sort_keys=False))
    return path


def read_run_config(run_dir: str | Path, section: str, what: str) -> dict[str, Any]:
    """``RUN_DIR/config.yaml`` as written by ``write_run_config``, refused (one line) unless it holds
    ``section`` (e.g. ``pretrain``): the way a verb finds the options of the run it resumes."""
    from greenfm.config import read_yaml
    from greenfm.errors import ConfigError

    path = RunDir(Path(run_dir)).config
    if not path.is_file():
        raise ConfigError(f"{run_dir}: no config.yaml; not a greenfm run folder to resume")
    saved = read_yaml(path)
    if section not in saved:
        raise ConfigError(f"{path}: not a {what} run")
    return saved


class MetricsLog:
    """Appends rows to ``metrics.jsonl`` (and TensorBoard when importable); a no-op off rank 0."""

    def __init__(self, run: RunDir, *, enabled: bool, resume_step: int | None = None, resume_epoch: int = 0):
        self.enabled = enabled
        self.path = run.metrics
        self.writer = None
        if not enabled:
            return
        if resume_step is not None:
            self._truncate(resume_step, resume_epoch)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run.tensorboard), purge_step=resume_step)
        except Exception:  # tensorboard is optional
            self.writer = None

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        line = json.dumps(plain_json(row)) + "\n"
        size = self.path.stat().st_size if self.path.is_file() else 0
        try:
            with disk_full_guard(self.path.parent, needed=len(line), what=self.path.name):
                with open(self.path, "a") as handle:
                    handle.write(line)
        except DiskFullError:
            with contextlib.suppress(OSError):  # no half row: cut back to the last whole one
                os.truncate(self.path, size)
            raise
        if self.writer is not None:
            prefix = "epoch/" if row.get("type") == "epoch" else "train/"
            x = row.get("epoch") if row.get("type") == "epoch" else row.get("step")
            for key, value in row.items():
                if key not in ("type", "step", "epoch") and isinstance(value, (int, float)):
                    self.writer.add_scalar(prefix + key, value, x)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def _truncate(self, step: int, epoch: int) -> None:
        """Forget rows an interrupted session wrote after the checkpoint being resumed."""
        if not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by the crash
                continue
            if row.get("type") == "epoch" and row.get("epoch", 0) >= epoch:
                continue
            if row.get("type") != "epoch" and row.get("step", 0) > step:
                continue
            kept.append(line)
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))


def read_metrics(run_dir: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
    """Rows of ``metrics.jsonl``, optionally only ``kind`` ("step" or "epoch")."""
    path = RunDir(Path(run_dir)).metrics
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    return [r for r in rows if kind is None or r.get("type") == kind]


@contextmanager
def log_to_file(run: RunDir, *, enabled: bool) -> Iterator[None]:
    """Send greenfm's log records (INFO and up) to ``train.log`` while the block runs."""
    if not enabled:
        yield
        return
    handler = _LogFile(run.log, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    logger = logging.getLogger("greenfm")
    old_level = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        handler.close()


class _LogFile(logging.FileHandler):
    """``train.log``; a full disk raises ``DiskFullError`` where logging would print a traceback and go on."""

    def handleError(self, record: logging.LogRecord) -> None:
        exc = sys.exc_info()[1]
        if exc is not None and is_disk_full(exc):
            raise disk_full(Path(self.baseFilename).parent, what=Path(self.baseFilename).name) from None
        super().handleError(record)


def plain_json(value: Any) -> Any:
    """A JSON-, YAML- and ``weights_only``-safe copy: objects (paths ...) become strings, tuples lists."""
    if isinstance(value, dict):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(v) for v in value]
    if value is None or isinstance(value, bool):
        return value
    for kind in (str, int, float):  # subclasses (torch's version string, numpy scalars) become plain
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return str(value)
