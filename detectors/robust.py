"""Robust deviation: distance from a running median, in units of a running MAD.

Median and MAD are streaming estimates (frugal updates: the median steps towards each
reading by a fraction of the current spread, the spread tracks the absolute deviations),
so one spike cannot drag the baseline as a mean would. The score is 0.5 at
``z_alert`` robust standard deviations.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from detectors.base import Detector, FloatArray, IntArray
from detectors.registry import register

MAD_TO_SIGMA = 1.4826


@register
class RobustDeviation(Detector):
    name = "robust_z"
    catches = frozenset({"spike"})
    state_fields: ClassVar[dict[str, float]] = {"median": math.nan, "mad": 0.0, "n": 0.0}

    def __init__(
        self, *, z_alert: float = 6.0, rate: float = 0.02, warmup_readings: int = 60
    ) -> None:
        super().__init__()
        if z_alert <= 0 or not 0 < rate < 1 or warmup_readings < 1:
            raise ValueError("z_alert > 0, 0 < rate < 1 and warmup_readings >= 1 required")
        self.z_alert, self.rate, self.warmup_readings = z_alert, rate, warmup_readings

    def _score_round(self, series: IntArray, t: FloatArray, x: FloatArray) -> FloatArray:
        st = self._state
        median, mad, n = st["median"][series], st["mad"][series], st["n"][series]
        median = np.where(np.isnan(median), x, median)
        scale = np.maximum(MAD_TO_SIGMA * mad, 1e-9 + 1e-6 * np.abs(median))
        z = np.abs(x - median) / scale
        scores = np.where(n >= self.warmup_readings, z * z / (z * z + self.z_alert**2), 0.0)
        # Learn fast at first (a running average), then at the steady rate.
        weight = np.maximum(1.0 / (n + 1.0), self.rate)
        deviation = np.abs(x - median)
        mad = mad + weight * (np.minimum(deviation, 10 * scale) - mad)
        step = np.where(
            n < self.warmup_readings,
            weight * (x - median),
            weight * MAD_TO_SIGMA * mad * np.sign(x - median),
        )
        st["median"][series] = median + step
        st["mad"][series] = mad
        st["n"][series] = n + 1
        return scores
