"""Cycle profile: the wrong value for the time of day or week, where a series has a cycle.

Per series two profiles are learned online: one bin per ``day_bins`` of the day and one
per ``week_bins`` of the week. A bin's expectation comes from earlier visits only (the
readings of the current day, or week, are gathered apart and folded in when the next
visit begins), so a profile predicts from the past and never becomes a moving average of
the last hour. No cycle is configured: a profile is used only while it explains the
series, i.e. while the spread of the readings around it stays below ``cycle_share``
of their spread around the slow mean. Of the two, the one with the smaller spread wins.

Two views of the residual (reading minus the profile), each in units of the residual's
own usual spread:

- the reading: a value unusual *for this time* although inside the series' range (a
  crowd at 03:00 that would be normal at 18:00);
- its exponentially weighted mean (``span`` readings) against the usual spread of that
  mean: a pattern that changed, such as a daily peak that did not come, or a night that
  stays busy.

Each view scores 0.5 at ``z`` usual spreads; the detector scores the larger.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from detectors.base import Detector, FloatArray, IntArray, put_rows
from detectors.likelihood import Likelihood
from detectors.registry import register

DAY_S = 86_400.0
WEEK_S = 7 * DAY_S
LEARN_LIMIT = 6.0  # usual residual spreads a visit may move its bin's expectation
BIN_FIELDS = 5  # mean of earlier visits, sum and count of the open one, visits, its index


@register
class CycleProfile(Detector):
    name = "cycle"
    catches = frozenset({"seasonal"})
    state_fields: ClassVar[dict[str, float]] = {
        "overall": math.nan,  # slow mean of the readings
        "total_var": 0.0,  # their spread around it
        "seen": 0.0,  # readings
        # Per bin of the day, then per bin of the week: BIN_FIELDS values (``_profiles``).
        "bins": 0.0,
        # Spread of the readings around the day and the week profile, and how many
        # readings each was measured on: day_var, week_var, day_seen, week_seen.
        "fit": 0.0,
        "smooth": 0.0,  # EW mean of the residual
        "smooth_var": 0.0,  # its usual spread
        "resid_var": 0.0,  # the residual's usual spread
        "n": 0.0,  # readings scored against a profile
    }

    compact_fields: ClassVar[frozenset[str]] = frozenset({"bins"})

    def __init__(
        self,
        *,
        day_bins: int = 48,
        week_bins: int = 28,
        min_visits: int = 3,
        cycle_share: float = 0.5,
        rate: float = 0.25,
        span: int = 12,
        z: float = 10.0,
        slow_span: int = 2000,
        warmup_readings: int = 100,
        likelihood: dict[str, Any] | None = None,
    ) -> None:
        self.day_bins, self.week_bins = day_bins, week_bins
        super().__init__()
        if day_bins < 2 or week_bins < 2 or min_visits < 1 or not 0 < cycle_share < 1:
            raise ValueError("need day_bins, week_bins >= 2, min_visits >= 1, 0 < cycle_share < 1")
        if not 0 < rate <= 1 or span < 1 or z <= 0 or slow_span < 2 or warmup_readings < 1:
            raise ValueError("need 0 < rate <= 1, span >= 1, z > 0, slow_span >= 2")
        self.min_visits, self.cycle_share, self.rate = min_visits, cycle_share, rate
        self.alpha = 2.0 / (span + 1.0)
        self.slow = 2.0 / (slow_span + 1.0)
        self.z, self.warmup_readings = z, warmup_readings
        self.likelihood = Likelihood(**likelihood) if likelihood is not None else None

    def grow(self, needed: int) -> None:
        super().grow(needed)
        if self.likelihood is not None:
            self.likelihood.grow(needed)

    def state(self) -> dict[str, FloatArray]:
        out = super().state()
        if self.likelihood is not None:
            out |= {f"likelihood.{k}": v for k, v in self.likelihood.state().items()}
        return out

    def restore(self, state: dict[str, FloatArray]) -> None:
        own = {k: v for k, v in state.items() if not k.startswith("likelihood.")}
        super().restore(own)
        if self.likelihood is not None:
            self.likelihood.restore(
                {k[11:]: v for k, v in state.items() if k.startswith("likelihood.")}
            )

    def _widths(self) -> dict[str, int]:
        return {"bins": (self.day_bins + self.week_bins) * BIN_FIELDS, "fit": 4}

    def _profiles(
        self, series: IntArray, t: FloatArray, x: FloatArray, spread: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """What this time of day and of the week usually reads, from earlier visits of its
        bins (NaN: fewer than ``min_visits``); then the reading joins the current visits."""
        # One row of (mean, sum, count, visits, visit index) per bin: the day's bins, then
        # the week's, gathered and written back at once for both.
        day_bins, week_bins = self.day_bins, self.week_bins
        flat = self._state["bins"].reshape(-1, BIN_FIELDS)
        # Exact arithmetic at bin edges (readings on the hour are common): the remainder
        # of a whole period, divided by a whole bin width.
        n = len(series)
        day, in_day = np.divmod(t, DAY_S)
        week, in_week = np.divmod(t, WEEK_S)
        visit = np.concatenate((day, week))
        at = np.concatenate(
            (
                np.minimum(in_day // (DAY_S / day_bins), day_bins - 1),
                day_bins + np.minimum(in_week // (WEEK_S / week_bins), week_bins - 1),
            )
        ).astype(np.int64)
        first_row = series * (day_bins + week_bins)
        rows = np.concatenate((first_row, first_row)) + at
        mean, total, count, visits, last = flat.take(rows, axis=0).T
        # A new visit of this bin: what the previous one gathered joins the profile.
        closing = (last != visit) & (count > 0)
        gathered = total / np.maximum(count, 1.0)
        # A visit far from what the bin expects (a crowd surge, an outage) teaches it at
        # most LEARN_LIMIT usual spreads, or tomorrow's normal hour would look wrong.
        limit = np.where(
            visits >= self.min_visits, LEARN_LIMIT * np.concatenate((spread, spread)), np.inf
        )
        gathered = np.clip(gathered, mean - limit, mean + limit)
        weight = np.maximum(1.0 / (visits + 1.0), self.rate)
        learned = np.where(visits == 0, gathered, mean + weight * (gathered - mean))
        mean = np.where(closing, learned, mean)
        visits = visits + closing
        reading = np.concatenate((x, x))
        put_rows(
            flat,
            rows,
            np.array(
                (
                    mean,
                    np.where(closing, 0.0, total) + reading,
                    np.where(closing, 0.0, count) + 1.0,
                    visits,
                    visit,
                ),
                dtype=flat.dtype,
            ).T,
        )
        expected = np.where(visits >= self.min_visits, mean, np.nan)
        return expected[:n], expected[n:]

    def _score_round(self, series: IntArray, t: FloatArray, x: FloatArray) -> FloatArray:
        st = self._state
        spread = np.sqrt(st["resid_var"][series])
        day, week = self._profiles(series, t, x, np.where(st["n"][series] > 0, spread, np.inf))
        overall = st["overall"][series]
        overall = np.where(np.isnan(overall), x, overall)
        total_var = st["total_var"][series]
        fit = st["fit"].take(series, axis=0)
        day_var, week_var, day_seen, week_seen = fit.T
        # Which profile explains the series (spreads measured on no reading: not yet).
        limit = self.cycle_share * total_var
        day_ok = ~np.isnan(day) & (day_seen > 0) & (day_var < limit)
        week_ok = ~np.isnan(week) & (week_seen > 0) & (week_var < limit)
        use_week = week_ok & (~day_ok | (week_var < day_var))
        expected = np.where(use_week, week, np.where(day_ok, day, np.nan))
        has = ~np.isnan(expected)
        resid = np.where(has, x - np.where(has, expected, 0.0), 0.0)

        n = st["n"][series]
        resid_var, smooth, smooth_var = (
            st["resid_var"][series],
            st["smooth"][series],
            st["smooth_var"][series],
        )
        floor = 1e-9 + 1e-6 * np.abs(overall)
        z_point = np.abs(resid) / (np.sqrt(resid_var) + floor)
        fast = np.maximum(1.0 / (n + 1.0), self.alpha)
        smooth = np.where(has, smooth + fast * (resid - smooth), 0.0)
        iid = math.sqrt(self.alpha / (2.0 - self.alpha)) * np.sqrt(resid_var)
        z_smooth = np.abs(smooth) / (np.maximum(np.sqrt(smooth_var), iid) + floor)
        warm = has & (n >= self.warmup_readings)
        worst = np.where(warm, np.maximum(z_point, z_smooth), 0.0)
        scores = worst / (worst + self.z)
        if self.likelihood is not None:
            scores = self.likelihood.calibrate(series, scores, warm)

        # Spreads learn at the slow rate (fast at first); an unusual reading counts
        # clipped, so one wild value does not widen what is usual for long.
        w = np.maximum(1.0 / (n + 1.0), self.slow)
        clip = np.where(n >= self.warmup_readings, 9.0, np.inf)
        r2 = np.minimum(resid * resid, clip * np.maximum(resid_var, floor**2))
        st["resid_var"][series] = np.where(has, resid_var + w * (r2 - resid_var), resid_var)
        s2 = np.minimum(smooth * smooth, clip * np.maximum(smooth_var, floor**2))
        st["smooth_var"][series] = np.where(has, smooth_var + w * (s2 - smooth_var), smooth_var)
        st["smooth"][series] = smooth
        st["n"][series] = np.where(has, n + 1.0, n)

        seen = st["seen"][series]
        slow = np.maximum(1.0 / (seen + 1.0), self.slow)
        deviation = x - overall
        st["total_var"][series] = total_var + slow * (deviation * deviation - total_var)
        st["overall"][series] = overall + slow * deviation
        st["seen"][series] = seen + 1.0
        # How well each profile fits, measured wherever it has an expectation.
        miss = np.array((x - day, x - week)).T
        known = ~np.isnan(miss)
        counted = fit[:, 2:]
        weight = np.maximum(1.0 / (counted + 1.0), self.slow)
        square = np.where(known, miss * miss, 0.0)
        fit[:, :2] = np.where(known, fit[:, :2] + weight * (square - fit[:, :2]), fit[:, :2])
        fit[:, 2:] = counted + known
        put_rows(st["fit"], series, fit)
        return scores
