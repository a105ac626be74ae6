"""Multi-level thresholds with colours, a minimum duration and hysteresis.

Configured per quantity, e.g. combustible gas after GB/T 50493-2019::

    threshold(levels={"orange": 25.0, "red": 50.0}, clear={"orange": 20.0, "red": 45.0},
              for_s=10)

Each configured level owns its colour's score band (``detectors.levels``): a value at
or above the level's threshold scores inside that band, below every threshold it scores
green. The mapping is monotone, so the clear values map to clear points in score space
exactly; ``decider()`` returns the LevelDecider with those points and the durations.
``direction="below"`` is for quantities that are dangerous when low (a tank level, a
pressure).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Literal

import numpy as np

from detectors.base import Detector, FloatArray, IntArray
from detectors.levels import RAISE_AT, LevelDecider, colour_level
from detectors.registry import register

BAND = 0.2 * 0.995  # a level's scores stay inside its colour's band


@register
class ThresholdRule(Detector):
    name = "threshold"
    kind = "rule"

    def __init__(
        self,
        *,
        levels: Mapping[str, float] | None = None,
        clear: Mapping[str, float] | None = None,
        for_s: float = 0.0,
        direction: Literal["above", "below"] = "above",
    ) -> None:
        super().__init__()
        levels = dict(levels or {"red": 1.0})
        if direction not in ("above", "below"):
            raise ValueError("direction must be 'above' or 'below'")
        self.sign = 1.0 if direction == "above" else -1.0
        ranked = sorted((colour_level(c), self.sign * float(v)) for c, v in levels.items())
        if any(lv == 0 for lv, _ in ranked):
            raise ValueError("green is the normal state; thresholds start at blue")
        values = [v for _, v in ranked]
        if any(b <= a for a, b in itertools.pairwise(values)):
            worse = "higher" if direction == "above" else "lower"
            raise ValueError(f"each more severe colour needs a {worse} threshold")
        self.levels = np.array([lv for lv, _ in ranked], dtype=np.int64)
        self.edges = np.array(values, dtype=np.float64)
        spread = self.edges[-1] - self.edges[0] if len(values) > 1 else 0.0
        self.width = spread if spread > 0 else max(abs(self.edges[0]), 1.0)
        self.for_s = float(for_s)
        clear = dict(clear or {})
        # Without a clear value a level clears at its own threshold: no hysteresis.
        self.clear_points = list(RAISE_AT)
        for colour, value in clear.items():
            level = colour_level(colour)
            if level not in self.levels:
                raise ValueError(f"clear level for {colour}, which has no threshold")
            threshold = self.edges[list(self.levels).index(level)]
            if self.sign * value >= threshold:
                raise ValueError(f"{colour} must clear below its threshold (hysteresis)")
            self.clear_points[level - 1] = float(self.map(np.array([value]))[0])
        # A colour without a threshold of its own is reached and left with the next one.
        for k in range(4):
            if k + 1 not in self.levels:
                higher = [lv for lv in self.levels if lv > k + 1]
                if higher:
                    self.clear_points[k] = min(RAISE_AT[k], self.clear_points[higher[0] - 1])

    def map(self, values: FloatArray) -> FloatArray:
        """Scores of raw values (monotone in the dangerous direction)."""
        v = self.sign * np.asarray(values, dtype=np.float64)
        band = np.searchsorted(self.edges, v, side="right") - 1  # -1: below every threshold
        below = RAISE_AT[0] * np.exp(-np.maximum(self.edges[0] - v, 0.0) / self.width)
        safe = np.clip(band, 0, len(self.edges) - 1)
        start = np.array(RAISE_AT)[self.levels - 1][safe]
        left = self.edges[safe]
        right = np.append(self.edges[1:], np.inf)[safe]
        inner = np.where(
            np.isfinite(right),
            (v - left) / np.where(np.isfinite(right), right - left, 1.0),
            1.0 - np.exp(-np.maximum(v - left, 0.0) / self.width),
        )
        return np.where(band < 0, np.minimum(below, RAISE_AT[0] * 0.995), start + BAND * inner)

    def decider(self) -> LevelDecider:
        durations = [self.for_s] * 4
        return LevelDecider(clear_at=self.clear_points, for_s=durations)

    def _score_round(self, series: IntArray, t: FloatArray, x: FloatArray) -> FloatArray:
        return self.map(x)
