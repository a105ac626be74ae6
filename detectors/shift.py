"""Level shift: a smoothed reading away from the series' slow baseline, in its own units.

Two exponentially weighted means follow each series: a fast one (``span`` readings) and
a slow baseline (``base_span`` readings). Their gap is measured against the spread the
gap itself usually has (an exponentially weighted standard deviation of it), so the
detector is judged against each series' own behaviour: noisy, autocorrelated or
cyclic series have a wide usual gap, clean ones a narrow one, and no unit or scale has
to be configured. A gap of ``z`` usual spreads scores 0.5.

While the gap is large the baseline moves towards it only by ``clip`` spreads per
step, so a sustained shift keeps scoring for a while (an alert stays active while the
process stays shifted, not only at its onset) and one wild reading cannot drag the
baseline. A lasting new level is accepted gradually, as the clipped steps add up, and while the
gap is alarming its usual spread is not learned from it. It scores after
``warmup_readings`` readings and, with ``warmup_s``, that much device time (a day, for
series that follow the day: the first evening rush is no shift).

Measured by ``bench/detectors.py``: alone on SKAB valve2 (one per channel, OR-combined)
F1 0.75, FAR 5 %, MAR 37 % (0.79 / 13 % / 29 % with the other parts); it is the part that finds
collective anomalies (a valve closing) that no single reading betrays.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from detectors.base import Detector, FloatArray, IntArray
from detectors.registry import register


@register
class LevelShift(Detector):
    name = "level_shift"
    catches = frozenset({"shift"})
    state_fields: ClassVar[dict[str, float]] = {
        "base": math.nan,
        "var": 0.0,
        "raw_var": 0.0,
        "smooth": math.nan,
        "n": 0.0,
        "t_first": math.nan,
    }
    time_fields: ClassVar[frozenset[str]] = frozenset({"t_first"})

    def __init__(
        self,
        *,
        span: int = 120,
        base_span: int = 2000,
        z: float = 6.5,
        clip: float = 3.0,
        warmup_readings: int = 300,
        warmup_s: float = 0.0,
    ) -> None:
        super().__init__()
        if span < 1 or base_span <= span or z <= 0 or clip <= 0 or warmup_readings < 1:
            raise ValueError(
                "need span >= 1, base_span > span, z > 0, clip > 0 and warmup_readings >= 1"
            )
        if warmup_s < 0:
            raise ValueError("warmup_s must be >= 0")
        self.warmup_s = warmup_s
        self.alpha = 2.0 / (span + 1.0)
        self.iid_factor = math.sqrt(self.alpha / (2.0 - self.alpha))
        self.beta = 2.0 / (base_span + 1.0)
        self.z, self.clip, self.warmup_readings = z, clip, warmup_readings

    def _score_round(self, series: IntArray, t: FloatArray, x: FloatArray) -> FloatArray:
        st = self._state
        base, var, n = st["base"][series], st["var"][series], st["n"][series]
        base = np.where(np.isnan(base), x, base)
        smooth = st["smooth"][series]
        # Both means start as running means: no start-up transient in the gap's spread.
        fast = np.maximum(1.0 / (n + 1.0), self.alpha)
        smooth = np.where(np.isnan(smooth), x, smooth + fast * (x - smooth))
        raw_var = st["raw_var"][series]
        # Floor: the spread the fast mean would have if the readings were independent.
        # Without it a series that sits still (a counter at zero between bursts) has no
        # spread at all, and every later wiggle would be infinitely unusual.
        floor = self.iid_factor * np.sqrt(np.maximum(raw_var, 0.0))
        spread = np.maximum(np.sqrt(np.maximum(var, 0.0)), floor) + 1e-9 + 1e-6 * np.abs(base)
        gap = smooth - base
        z = np.abs(gap) / spread
        warm = n >= self.warmup_readings
        if self.warmup_s > 0:
            # A series with a daily rhythm (rush hours) shows a gap its usual spread has
            # not learnt yet until a whole day has gone by: that long at least.
            t_first = np.where(np.isnan(st["t_first"][series]), t, st["t_first"][series])
            st["t_first"][series] = t_first
            warm &= t - t_first >= self.warmup_s
        scores = np.where(warm, z / (z + self.z), 0.0)
        # Until warm, steps of the baseline are not clipped.
        weight = np.maximum(1.0 / (n + 1.0), self.beta)
        limit = np.where(warm, self.clip * spread, np.inf)
        step = np.clip(gap, -limit, limit)
        st["base"][series] = base + weight * step
        # While the gap is alarming its spread is not learned: a shift that lasts would
        # otherwise widen what counts as usual and close its own alert half-way through.
        alarming = warm & (z >= self.z)
        learned = (1.0 - weight) * (var + weight * step * step)
        st["var"][series] = np.where(alarming, var, learned)
        deviation = x - base
        st["raw_var"][series] = (1.0 - weight) * (raw_var + weight * deviation * deviation)
        st["smooth"][series] = smooth
        st["n"][series] = n + 1
        return scores
