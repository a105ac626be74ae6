"""Physically impossible values: below ``minimum`` or above ``maximum``.

A % LEL of 140 or a negative tank level is a sensor or wiring fault, not a hazard; the
rule flags the device (default colour blue) so it can be serviced, while other rules
keep judging the quantity.
"""

from __future__ import annotations

import numpy as np

from detectors.base import Detector, FloatArray, IntArray
from detectors.levels import RAISE_AT, LevelDecider, colour_level
from detectors.registry import register


@register
class OutOfRangeRule(Detector):
    name = "out_of_range"
    kind = "rule"

    def __init__(
        self, *, minimum: float = -np.inf, maximum: float = np.inf, colour: str = "blue"
    ) -> None:
        super().__init__()
        if not minimum < maximum:
            raise ValueError("minimum must be below maximum")
        level = colour_level(colour)
        if level == 0:
            raise ValueError("an impossible value needs a warning colour, not green")
        self.minimum, self.maximum, self.level = minimum, maximum, level

    def decider(self) -> LevelDecider:
        return LevelDecider()

    def _score_round(self, series: IntArray, t: FloatArray, x: FloatArray) -> FloatArray:
        outside = (x < self.minimum) | (x > self.maximum)
        return np.where(outside, RAISE_AT[self.level - 1] + 0.1, 0.0)
