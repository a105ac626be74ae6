"""Capacity ratio: people against a site's safe capacity, cars against a lot's spaces.

Levels are fractions of the capacity (``{"yellow": 0.7, "orange": 0.85, "red": 1.0}``).
Capacities differ per series and come from the registry as the series' context
(``set_context(series, capacity=...)``); a series without a known capacity scores 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from detectors.base import Detector, FloatArray, IntArray
from detectors.levels import LevelDecider
from detectors.registry import register
from detectors.rules.threshold import ThresholdRule


@register
class CapacityRule(Detector):
    name = "capacity"
    kind = "rule"
    state_fields: ClassVar[dict[str, float]] = {"capacity": math.nan}
    context_fields: ClassVar[frozenset[str]] = frozenset({"capacity"})

    def __init__(
        self,
        *,
        levels: Mapping[str, float] | None = None,
        clear: Mapping[str, float] | None = None,
        for_s: float = 0.0,
        capacity: float | None = None,
    ) -> None:
        super().__init__()
        self.bands = ThresholdRule(
            levels=levels or {"yellow": 0.7, "orange": 0.85, "red": 1.0}, clear=clear, for_s=for_s
        )
        self.default_capacity = capacity

    def set_context(self, series: Any, **context: Any) -> None:
        if "capacity" in context:
            values = np.asarray(context["capacity"], dtype=np.float64)
            context["capacity"] = np.where(values > 0, values, np.nan)  # none known
        super().set_context(series, **context)

    def decider(self) -> LevelDecider:
        return self.bands.decider()

    def level_in_units(self, configured: float, series: int) -> float | None:
        capacity = self._capacity(np.array([series], dtype=np.int64))[0]
        return None if math.isnan(capacity) else float(configured * capacity)

    def _capacity(self, series: IntArray) -> FloatArray:
        self.grow(int(series.max()) + 1 if len(series) else 0)
        capacity = self._state["capacity"][series]
        if self.default_capacity is not None:
            capacity = np.where(np.isnan(capacity), self.default_capacity, capacity)
        return capacity

    def _score_round(self, series: IntArray, t: FloatArray, x: FloatArray) -> FloatArray:
        capacity = self._capacity(series)
        known = np.isfinite(capacity)
        ratio = x / np.where(known, capacity, 1.0)
        return np.where(known, self.bands.map(ratio), 0.0)
