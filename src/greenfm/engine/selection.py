"""Model selection: which epoch's weights to keep, by a metric the ``evaluate`` callback returns."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from greenfm.errors import ConfigError


@dataclass
class BestEpoch:
    """The best value of ``metric`` so far (``mode`` "max" or "min"); NaN never wins."""

    metric: str
    mode: Literal["max", "min"] = "max"
    value: float | None = None
    epoch: int | None = None
    step: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("max", "min"):
            raise ConfigError(f"select_mode must be 'max' or 'min', not {self.mode!r}")

    def consider(self, metrics: dict[str, float], *, epoch: int, step: int) -> bool:
        """Record this epoch if it beats the best; True when it does."""
        if self.metric not in metrics:
            raise ConfigError(f"evaluate returned no '{self.metric}' (it returned {sorted(metrics)})")
        value = float(metrics[self.metric])
        if math.isnan(value):
            return False
        if self.value is not None and (value <= self.value if self.mode == "max" else value >= self.value):
            return False
        self.value, self.epoch, self.step = value, epoch, step
        return True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
