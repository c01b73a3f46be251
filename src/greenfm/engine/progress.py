"""The training progress bar (rich): steps, loss, lr, images/s, elapsed and ETA. Rank 0 only."""

from __future__ import annotations

from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class ProgressBar:
    """A no-op unless ``enabled``; use as a context manager around the loop."""

    def __init__(self, *, total: int, done: int, enabled: bool):
        self.enabled = enabled
        self._progress: Progress | None = None
        self._task: Any = None
        self.total, self.done = total, done

    def __enter__(self) -> ProgressBar:
        if self.enabled:
            self._progress = Progress(
                TextColumn("epoch {task.fields[epoch]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[ips]} img/s"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
            )
            self._progress.start()
            self._task = self._progress.add_task(
                "train", total=self.total, completed=self.done, epoch="-", loss="-", lr="-", ips="-"
            )
        return self

    def advance(self, *, epoch: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=1, epoch=epoch)

    def show(self, *, loss: float, lr: float, images_per_s: float) -> None:
        if self._progress is not None:
            self._progress.update(self._task, loss=f"{loss:.4g}", lr=f"{lr:.3g}", ips=f"{images_per_s:.1f}")

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
