"""Calibration: a raw score as a likelihood against the series' own recent scores.

A raw score means different things on different series: a z of 5 is rare on a calm
sensor and routine on a bursty counter. As in HTM's anomaly likelihood, per series the
short-term mean of the raw score (``short`` readings) is compared with the distribution
that mean has had over the long term (an exponentially weighted mean and spread over
``long`` readings, learned from readings that were not themselves alarming): the tail
probability ``p`` of the Gaussian with that mean and spread above the current value.

The calibrated score is ``log(p) / log(p_alert) / 2``, clipped to [0, 1]: 0.5 exactly
when ``p == p_alert`` and 1 at ``p_alert`` squared, so one threshold (the deciders' 0.5)
means the same rarity, "once in 1 / p_alert readings of this series", on every series.
Nothing scores before ``warmup_readings`` raw scores have been seen.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from detectors.base import FloatArray, IntArray, SeriesState

# Gaussian upper tail in log space (Borjesson and Sundberg's approximation, relative
# error below 0.3 % for z >= 0): log Q(z) = -z^2/2 - log((1-a) z + a sqrt(z^2+b)) - log sqrt(2 pi)
_A, _B = 0.339, 5.510
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def log_gaussian_tail(z: FloatArray) -> FloatArray:
    """log P(Z > z) for a standard normal Z; 0 (p = 1) for z <= 0 is close enough here."""
    z = np.maximum(z, 0.0)
    out: FloatArray = (
        -0.5 * z * z - np.log((1.0 - _A) * z + _A * np.sqrt(z * z + _B)) - _LOG_SQRT_2PI
    )
    return np.minimum(out, 0.0)


class Likelihood:
    """Per-series calibration of one raw score (not a detector: a part's last step)."""

    fields: ClassVar[dict[str, float]] = {"short": 0.0, "mean": 0.0, "var": 0.0, "n": 0.0}

    def __init__(
        self,
        *,
        p_alert: float = 1e-4,
        short: int = 5,
        long: int = 2000,
        warmup_readings: int = 300,
        floor: float = 0.02,
    ) -> None:
        if not 0 < p_alert < 0.5 or short < 1 or long <= short or warmup_readings < 1:
            raise ValueError("need 0 < p_alert < 0.5, short >= 1, long > short, warmup >= 1")
        if floor <= 0:
            raise ValueError("floor must be > 0")
        self.log_alert = math.log(p_alert)
        self.alpha = 2.0 / (short + 1.0)
        self.beta = 2.0 / (long + 1.0)
        self.warmup_readings, self.floor = warmup_readings, floor
        self._state = SeriesState(self.fields)

    def grow(self, needed: int) -> None:
        self._state.grow(needed)

    def calibrate(self, series: IntArray, raw: FloatArray, valid: Any = True) -> FloatArray:
        """Calibrated scores of ``raw`` (one per series, no repeats); where ``valid`` is
        False the raw score is not learned from and scores 0."""
        st = self._state
        short, mean, var, n = (
            st["short"][series],
            st["mean"][series],
            st["var"][series],
            st["n"][series],
        )
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != raw.shape:
            valid = np.broadcast_to(valid, raw.shape)
        started = np.where(n == 0, raw, short)  # from the first raw score: no offset bias
        short = np.where(valid, started + self.alpha * (raw - started), short)
        # The spread has a floor: a series whose raw score sat still would otherwise make
        # every later flicker infinitely unlikely.
        spread = np.maximum(np.sqrt(np.maximum(var, 0.0)), self.floor)
        z = (short - mean) / spread
        warm = valid & (n >= self.warmup_readings)
        scores = np.where(warm, 0.5 * log_gaussian_tail(z) / self.log_alert, 0.0)
        # Learn the usual level from readings that are not alarming themselves (clipped),
        # so that a long anomaly does not teach the series that it is normal at once.
        weight = np.maximum(1.0 / (n + 1.0), self.beta)
        clipped = np.where(warm, np.minimum(short, mean + 3.0 * spread), short)
        delta = clipped - mean
        st["mean"][series] = np.where(valid, mean + weight * delta, mean)
        st["var"][series] = np.where(valid, (1.0 - weight) * (var + weight * delta * delta), var)
        st["short"][series] = short
        st["n"][series] = n + valid
        return np.clip(scores, 0.0, 1.0)

    def state(self) -> dict[str, FloatArray]:
        return self._state.snapshot()

    def restore(self, state: dict[str, FloatArray]) -> None:
        self._state.restore(state, "Likelihood")
