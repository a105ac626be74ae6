"""Range novelty: how far a reading goes beyond every value its series has shown so far.

A value outside the whole range seen so far is the plainest sign that something new is
happening (a spike, a level shift, a sensor gone wild), and on real benchmark data it is
one of the strongest single signals. The excess is measured against the width of the range
and mapped to [0, 1] so that an excess of ``margin`` times the range scores 0.5.

No score during warm-up: the range means nothing until the series has shown at least
``warmup_readings`` readings spanning ``warmup_s`` of device time (a day by default, so
that a daily cycle has been seen once), or ``warmup_enough_readings`` readings, whichever
comes first (a fast sensor, 1 Hz say, has shown its range long before a day is over).
With ``noise_multiple`` > 0 the excess must also be that many times the series' typical
step (an EW mean of |x_t - x_t-1|) to score 0.5: fewer alerts from noise setting small
records on short or noisy series, at the cost of later detections (measured in
bench/detectors.py: off by default). ``young_readings`` raises that multiple by
sqrt(young_readings / n) while the series has shown fewer readings: a young range is
broken by noise more often. Optionally the range forgets: with ``memory_s`` its
edges relax towards the recent mean with that time constant.

With ``p_alert`` a break must also be rare for this series (peaks over threshold): the
series breaks its range at a rate it has shown (an exponentially weighted share over
``rate_span`` readings) by excesses that are roughly exponential with the mean excess
it has shown, so a break of excess ``e`` is as rare per reading as
``rate * exp(-e / mean excess)``; the score is capped at ``log(p) / log(p_alert) / 2``,
0.5 at ``p_alert``. ``alert_every_s`` sets the same rarity in device time instead: a
break as rare as once in that many seconds of the series' readings, converted per reading
by the series' own interval (an EW mean of its gaps), so a sensor read every 10 s and
one read every 2 minutes raise as few alerts a day. A level that wanders (a tank
filling and draining) breaks its range week after week by a step or so and stays quiet;
a jump far beyond still alerts.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from detectors.base import BoolArray, Detector, FloatArray, IntArray
from detectors.registry import register

PRIOR_BREAKS = 3.0  # pseudo-breaks of one typical step behind a series' typical excess


@register
class RangeNovelty(Detector):
    name = "range_novelty"
    catches = frozenset({"spike", "shift"})
    time_fields: ClassVar[frozenset[str]] = frozenset({"t_first", "t_last"})
    state_fields: ClassVar[dict[str, float]] = {
        "noise": 0.0,
        "previous": math.nan,
        "lo": math.inf,
        "hi": -math.inf,
        "n": 0.0,
        "t_first": math.nan,
        "t_last": math.nan,
        "mean": 0.0,
        "record_rate": 0.0,  # share of readings that broke the range
        "record_excess": 0.0,  # mean excess of those that did
        "records": 0.0,
        "interval": 0.0,  # EW mean of the gaps between readings, seconds
    }

    def __init__(
        self,
        *,
        margin: float = 0.01,
        warmup_s: float = 86_400.0,
        warmup_readings: int = 30,
        warmup_enough_readings: int = 400,
        noise_multiple: float = 0.0,
        memory_s: float | None = None,
        young_readings: int = 0,
        p_alert: float | None = None,
        alert_every_s: float | None = None,
        rate_span: int = 5000,
    ) -> None:
        super().__init__()
        if margin <= 0 or warmup_s < 0 or warmup_readings < 1:
            raise ValueError("margin > 0, warmup_s >= 0 and warmup_readings >= 1 required")
        if memory_s is not None and memory_s <= 0:
            raise ValueError("memory_s must be > 0")
        self.margin = margin
        self.warmup_s = warmup_s
        self.warmup_readings = warmup_readings
        self.warmup_enough_readings = max(warmup_enough_readings, warmup_readings)
        self.memory_s = memory_s
        self.noise_multiple = noise_multiple
        self.young_readings = young_readings
        if p_alert is not None and not 0 < p_alert < 1:
            raise ValueError("p_alert must lie in (0, 1)")
        if alert_every_s is not None and not alert_every_s > 0:
            raise ValueError("alert_every_s must be > 0")
        if p_alert is not None and alert_every_s is not None:
            raise ValueError("set one of p_alert (per reading) and alert_every_s (device time)")
        if rate_span < 2:
            raise ValueError("rate_span must be >= 2")
        self.log_alert = math.log(p_alert) if p_alert is not None else None
        self.alert_every_s = alert_every_s
        self.rate_beta = 1.0 / rate_span

    def _score_round(self, series: IntArray, t: FloatArray, x: FloatArray) -> FloatArray:
        st = self._state
        lo, hi, n = st["lo"][series], st["hi"][series], st["n"][series]
        first = n == 0
        t_first = np.where(first, t, st["t_first"][series])
        mean = np.where(first, x, st["mean"][series])
        if self.memory_s is not None:
            dt = np.where(first, 0.0, np.maximum(t - st["t_last"][series], 0.0))
            keep = np.exp(-dt / self.memory_s)
            lo = np.where(first, lo, mean - (mean - lo) * keep)
            hi = np.where(first, hi, mean + (hi - mean) * keep)
        width = hi - lo
        noise = st["noise"][series]
        scale = np.maximum(width, 1e-9 + 1e-6 * np.maximum(np.abs(hi), np.abs(lo)))
        if self.noise_multiple > 0:
            # a young range is broken by noise more often (records come at ~1/n)
            youth = np.sqrt(np.maximum(self.young_readings / (n + 1.0), 1.0))
            multiple = self.noise_multiple * youth
            scale = np.maximum(scale, multiple * noise / self.margin)
        excess = np.maximum(np.maximum(x - hi, lo - x), 0.0)
        ratio = np.where(np.isfinite(scale), excess / np.where(np.isfinite(scale), scale, 1.0), 0.0)
        warm = (n >= self.warmup_readings) & (
            (t - t_first >= self.warmup_s) | (n >= self.warmup_enough_readings)
        )
        scores = np.where(warm, ratio / (ratio + self.margin), 0.0)
        if self.log_alert is not None or self.alert_every_s is not None:
            scored = np.isfinite(scale)
            scores = np.minimum(scores, self._rarity(series, n, excess, noise, scored))
        if self.alert_every_s is not None:
            gap = np.where(first, 0.0, np.maximum(t - st["t_last"][series], 0.0))
            interval = st["interval"][series]
            learn = np.maximum(1.0 / np.maximum(n, 1.0), 0.01)
            st["interval"][series] = np.where(first, 0.0, interval + learn * (gap - interval))

        st["lo"][series] = np.minimum(lo, x)
        st["hi"][series] = np.maximum(hi, x)
        st["n"][series] = n + 1
        st["t_first"][series] = t_first
        st["t_last"][series] = t
        st["mean"][series] = mean + 0.01 * (x - mean)
        step = np.abs(x - st["previous"][series])
        st["noise"][series] = np.where(np.isnan(step), noise, noise + 0.01 * (step - noise))
        st["previous"][series] = x
        return scores

    def _rarity(
        self,
        series: IntArray,
        n: FloatArray,
        excess: FloatArray,
        noise: FloatArray,
        scored: BoolArray,
    ) -> FloatArray:
        """Peaks over threshold: a range is broken at the series' own rate, by excesses
        that are roughly exponential, so this break is as rare per reading as
        rate * exp(-excess / typical excess); 0.5 where that is ``p_alert``.

        The recent rate forgets within ``rate_span`` readings, hours on a fast sensor, so
        the share of breaks over the series' life (at least one in the ``n`` readings so
        far) is a floor under it; and a series with few breaks has shown little of their
        size, so the typical excess is shrunk towards one typical step (the size of
        records of plain noise). Without them a record of plain noise a day after the
        last, on a sensor read every few seconds, was judged rare."""
        st = self._state
        log_alert: FloatArray | float
        if self.alert_every_s is not None:
            # once in alert_every_s of device time is once in alert_every_s / interval
            # readings of this series
            per_reading = st["interval"][series] / self.alert_every_s
            log_alert = np.log(np.clip(per_reading, 1e-300, 0.5))
        else:
            assert self.log_alert is not None
            log_alert = self.log_alert
        rate, typical = st["record_rate"][series], st["record_excess"][series]
        records = st["records"][series]
        # the recent rate forgets within ``rate_span`` readings, hours on a fast sensor:
        # the series' lifetime share of breaks is a floor under it
        rate_or_prior = np.maximum(rate, np.maximum(records, 1.0) / (n + 1.0))
        # a few breaks say little about their typical size: shrunk towards the step, as
        # if PRIOR_BREAKS breaks of one typical step had been seen
        typical_or_prior = (records * typical + PRIOR_BREAKS * noise) / (records + PRIOR_BREAKS)
        log_p = np.log(np.maximum(rate_or_prior, 1e-300)) - excess / np.maximum(
            typical_or_prior, 1e-300
        )
        rarity = np.where(typical_or_prior > 0, 0.5 * log_p / log_alert, 1.0)
        broke = (excess > 0) & scored
        weight = np.maximum(1.0 / (n + 1.0), self.rate_beta)
        st["record_rate"][series] = rate + weight * (broke - rate)
        learn = np.maximum(1.0 / (records + 1.0), 0.05)
        st["record_excess"][series] = np.where(broke, typical + learn * (excess - typical), typical)
        st["records"][series] = records + broke
        return rarity
