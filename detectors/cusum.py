"""CUSUM drift: small persistent shifts that no single reading betrays.

Readings are standardised against an exponentially weighted mean and spread (time
constant ``span`` readings); two one-sided cumulative sums collect standardised excess
beyond ``slack`` and score 0.5 when either reaches ``limit``.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from detectors.base import Detector, FloatArray, IntArray
from detectors.registry import register


@register
class CusumDrift(Detector):
    name = "cusum"
    catches = frozenset({"drift", "shift"})
    state_fields: ClassVar[dict[str, float]] = {
        "mean": math.nan,
        "var": 0.0,
        "up": 0.0,
        "down": 0.0,
        "n": 0.0,
    }

    def __init__(
        self,
        *,
        span: int = 1000,
        slack: float = 1.0,
        limit: float = 12.0,
        warmup_readings: int = 60,
    ) -> None:
        super().__init__()
        if span < 2 or slack < 0 or limit <= 0 or warmup_readings < 1:
            raise ValueError("span >= 2, slack >= 0, limit > 0 and warmup_readings >= 1")
        self.alpha = 2.0 / (span + 1.0)
        self.slack, self.limit, self.warmup_readings = slack, limit, warmup_readings

    def _score_round(self, series: IntArray, t: FloatArray, x: FloatArray) -> FloatArray:
        st = self._state
        mean, var, n = st["mean"][series], st["var"][series], st["n"][series]
        mean = np.where(np.isnan(mean), x, mean)
        sigma = np.sqrt(np.maximum(var, 0.0)) + 1e-9 + 1e-6 * np.abs(mean)
        z = np.clip((x - mean) / sigma, -10.0, 10.0)
        warm = n >= self.warmup_readings
        up = np.where(warm, np.maximum(0.0, st["up"][series] + z - self.slack), 0.0)
        down = np.where(warm, np.maximum(0.0, st["down"][series] - z - self.slack), 0.0)
        worst = np.maximum(up, down)
        scores = worst / (worst + self.limit)
        weight = np.maximum(1.0 / (n + 1.0), self.alpha)
        delta = x - mean
        st["mean"][series] = mean + weight * delta
        st["var"][series] = (1 - weight) * (var + weight * delta * delta)
        st["up"][series], st["down"][series] = up, down
        st["n"][series] = n + 1
        return scores
