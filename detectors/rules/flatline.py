"""Stuck sensor: a value that has not moved by more than ``tolerance`` for ``duration_s``.

Real sensors jitter; a reading frozen for an hour is a dead sensor or a frozen gateway
cache, and its readings no longer say anything. The score sits in the configured colour's
band while the series is stuck, and drops to 0 on the first reading that moves.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from detectors.base import Detector, FloatArray, IntArray
from detectors.levels import RAISE_AT, LevelDecider, colour_level
from detectors.registry import register


@register
class FlatlineRule(Detector):
    name = "flatline"
    kind = "rule"
    time_fields: ClassVar[frozenset[str]] = frozenset({"since"})
    state_fields: ClassVar[dict[str, float]] = {"anchor": math.nan, "since": math.nan}

    def __init__(
        self, *, duration_s: float = 3600.0, tolerance: float = 0.0, colour: str = "yellow"
    ) -> None:
        super().__init__()
        if duration_s <= 0 or tolerance < 0:
            raise ValueError("duration_s > 0 and tolerance >= 0 required")
        level = colour_level(colour)
        if level == 0:
            raise ValueError("a stuck sensor needs a warning colour, not green")
        self.duration_s, self.tolerance, self.level = duration_s, tolerance, level

    def decider(self) -> LevelDecider:
        return LevelDecider()

    def _score_round(self, series: IntArray, t: FloatArray, x: FloatArray) -> FloatArray:
        st = self._state
        anchor, since = st["anchor"][series], st["since"][series]
        moved = ~(np.abs(x - anchor) <= self.tolerance)  # NaN anchor counts as moved
        st["anchor"][series] = np.where(moved, x, anchor)
        since = np.where(moved, t, since)
        st["since"][series] = since
        stuck = t - since >= self.duration_s
        return np.where(stuck, RAISE_AT[self.level - 1] + 0.1, 0.0)
