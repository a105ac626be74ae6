"""Rate of change: a reading rising (or falling) fast, before any level is crossed.

A gas concentration climbing 5 % LEL a minute is an emergency at 8 % LEL already. The
rate is the change between consecutive readings per minute of device time, smoothed
with time constant ``window_s`` so one noisy step does not count as a trend; its levels
work like a threshold rule's (colours, clear values, duration) in units per minute.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar, Literal

import numpy as np

from detectors.base import Detector, FloatArray, IntArray
from detectors.levels import LevelDecider
from detectors.registry import register
from detectors.rules.threshold import ThresholdRule


@register
class RateRule(Detector):
    name = "rate"
    kind = "rule"
    time_fields: ClassVar[frozenset[str]] = frozenset({"t_previous"})
    state_fields: ClassVar[dict[str, float]] = {
        "previous": math.nan,
        "t_previous": math.nan,
        "rate": 0.0,
    }

    def __init__(
        self,
        *,
        levels: Mapping[str, float] | None = None,
        clear: Mapping[str, float] | None = None,
        for_s: float = 0.0,
        window_s: float = 60.0,
        direction: Literal["above", "below"] = "above",
    ) -> None:
        super().__init__()
        if window_s <= 0:
            raise ValueError("window_s must be > 0")
        self.window_s = window_s
        self.bands = ThresholdRule(
            levels=levels or {"yellow": 1.0}, clear=clear, for_s=for_s, direction=direction
        )

    def decider(self) -> LevelDecider:
        return self.bands.decider()

    def _score_round(self, series: IntArray, t: FloatArray, x: FloatArray) -> FloatArray:
        st = self._state
        previous, t_previous, rate = (
            st["previous"][series],
            st["t_previous"][series],
            st["rate"][series],
        )
        dt = t - t_previous
        fresh = np.isfinite(previous) & (dt > 0)
        step = np.where(fresh, (x - previous) / np.where(fresh, dt, 1.0) * 60.0, 0.0)
        weight = np.where(fresh, 1.0 - np.exp(-np.where(fresh, dt, 0.0) / self.window_s), 0.0)
        rate = rate + weight * (step - rate)
        st["rate"][series] = rate
        st["previous"][series] = x
        st["t_previous"][series] = np.where(np.isfinite(t_previous) & (dt <= 0), t_previous, t)
        return np.where(np.isfinite(previous), self.bands.map(rate), 0.0)
