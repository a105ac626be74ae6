"""Deciding: scores in, alerts out, per series, with hysteresis.

An alert opens on the first reading whose score reaches ``on`` (its onset) and stays
active until ``clear_after`` consecutive readings score below ``off``: one alert per
episode, not one per noisy reading above the line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from detectors.base import BoolArray, FloatArray, SeriesState, as_batch, split_rounds


@dataclass(frozen=True)
class Decision:
    onset: BoolArray  # the reading that opens an alert
    active: BoolArray  # every reading while an alert is open
    cleared: BoolArray  # the reading on which an open alert closes


class AlertDecider:
    def __init__(self, *, on: float = 0.5, off: float | None = None, clear_after: int = 8) -> None:
        off = on if off is None else off
        if not 0 < on <= 1 or not 0 <= off <= on or clear_after < 1:
            raise ValueError("need 0 < on <= 1, 0 <= off <= on and clear_after >= 1")
        self.on, self.off, self.clear_after = on, off, clear_after
        self._state = SeriesState({"active": 0.0, "quiet": 0.0})

    def decide(self, series: Any, t: Any, scores: Any) -> Decision:
        """Per reading: onset (opens an alert), active (an alert is open), cleared (closes)."""
        series, _, scores = as_batch(series, t, scores)
        if len(series) == 0:
            return Decision(*(np.zeros(0, dtype=bool) for _ in range(3)))
        self._state.grow(int(series.max()) + 1)
        rounds = split_rounds(series)
        if len(rounds) == 1:  # the common batch: each series once
            return self._decide_round(series, scores)
        onset = np.zeros(len(series), dtype=bool)
        active = np.zeros(len(series), dtype=bool)
        cleared = np.zeros(len(series), dtype=bool)
        for positions in rounds:
            decided = self._decide_round(series[positions], scores[positions])
            onset[positions] = decided.onset
            active[positions] = decided.active
            cleared[positions] = decided.cleared
        return Decision(onset, active, cleared)

    def _decide_round(self, s: np.ndarray, score: np.ndarray) -> Decision:
        """``decide`` for readings of distinct series."""
        st = self._state
        was = st["active"][s] > 0
        quiet = np.where(was & (score < self.off), st["quiet"][s] + 1, 0.0)
        start = ~was & (score >= self.on)
        now = (was & (quiet < self.clear_after)) | start
        st["active"][s] = now
        st["quiet"][s] = np.where(now, quiet, 0.0)
        return Decision(start, now, was & ~now)

    def state(self) -> dict[str, FloatArray]:
        return self._state.snapshot()

    def restore(self, state: dict[str, FloatArray]) -> None:
        self._state.restore(state, "AlertDecider")
