"""Seasonal baseline: what this series usually reads at this time of day (or week).

Counts and occupancy follow the clock: a square full of people at 18:00 is normal, at
03:00 it is not. Per series and per time-of-day bin (``bins_per_day``; with ``weekly``,
per bin of the week) the detector keeps an exponentially weighted mean and absolute
deviation; a reading is scored by its distance from its bin's mean, in units of that
bin's deviation (floored at a fraction of the series' overall spread), 0.5 at
``z_alert``. A bin needs ``min_visits`` visits (days or weeks) before it scores.
Local time: ``utc_offset_h`` (China Standard Time by default).
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from detectors.base import Detector, FloatArray, IntArray
from detectors.registry import register


@register
class SeasonalBaseline(Detector):
    name = "seasonal"
    catches = frozenset({"seasonal"})
    state_fields: ClassVar[dict[str, float]] = {
        "mean": math.nan,
        "dev": 0.0,
        "visits": 0.0,
        "last_bin_day": -1.0,
        "spread": 0.0,
        "overall": math.nan,
    }

    def __init__(
        self,
        *,
        bins_per_day: int = 48,
        weekly: bool = False,
        z_alert: float = 6.0,
        rate: float = 0.2,
        min_visits: int = 3,
        utc_offset_h: float = 8.0,
    ) -> None:
        self.bins_per_day, self.weekly = bins_per_day, weekly
        super().__init__()
        if bins_per_day < 1 or z_alert <= 0 or not 0 < rate <= 1 or min_visits < 1:
            raise ValueError("bins_per_day >= 1, z_alert > 0, 0 < rate <= 1, min_visits >= 1")
        self.z_alert, self.rate, self.min_visits = z_alert, rate, min_visits
        self.offset_s = utc_offset_h * 3600.0

    def _widths(self) -> dict[str, int]:
        bins = self.bins_per_day * (7 if self.weekly else 1)
        return {"mean": bins, "dev": bins, "visits": bins, "last_bin_day": bins}

    def _score_round(self, series: IntArray, t: FloatArray, x: FloatArray) -> FloatArray:
        st = self._state
        local = t + self.offset_s
        day = np.floor(local / 86_400.0)
        period = 7 * 86_400.0 if self.weekly else 86_400.0
        bins = (np.mod(local, period) / period * st["mean"].shape[1]).astype(np.int64)
        mean = st["mean"][series, bins]
        dev = st["dev"][series, bins]
        visits = st["visits"][series, bins]
        overall = st["overall"][series]
        overall = np.where(np.isnan(overall), x, overall)
        spread = st["spread"][series]
        scale = np.maximum(1.25 * dev, 0.25 * spread) + 1e-9 + 1e-6 * np.abs(overall)
        z = np.abs(x - np.where(np.isnan(mean), x, mean)) / scale
        scores = np.where(visits >= self.min_visits, z * z / (z * z + self.z_alert**2), 0.0)

        new_visit = st["last_bin_day"][series, bins] != day
        visits = visits + new_visit
        weight = np.maximum(1.0 / np.maximum(visits, 1.0), self.rate)
        first = np.isnan(mean)
        mean = np.where(first, x, mean)
        dev = np.where(first, 0.0, dev + weight * (np.abs(x - mean) - dev))
        st["mean"][series, bins] = mean + weight * (x - mean)
        st["dev"][series, bins] = dev
        st["visits"][series, bins] = visits
        st["last_bin_day"][series, bins] = day
        st["overall"][series] = overall + 0.01 * (x - overall)
        st["spread"][series] = spread + 0.01 * (np.abs(x - overall) - spread)
        return scores
