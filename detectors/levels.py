"""Five colours and the level decider: scores in, warning levels out.

Levels follow the command centre's five-colour warning: 0 green (normal), 1 blue,
2 yellow, 3 orange, 4 red. Rule detectors map their readings onto scores so that level k
starts at ``RAISE_AT[k - 1]`` (blue 0.2, yellow 0.4, orange 0.6, red 0.8); the decider
then applies, per series:

- a minimum duration ("for"): a level is reached only after the score has stayed at or
  above its start for ``for_s`` seconds of device time;
- hysteresis: a level is kept until the score falls below its clear point, which lies
  below its start (a gas alarm raised at 25 % LEL clears below 20 %, say), so a reading
  hovering on the line does not make the alert flap;
- the colour may rise and fall within one warning; an onset is the reading that leaves
  green, a clear the reading that returns to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from detectors.base import BoolArray, FloatArray, SeriesState, as_batch, split_rounds

COLOURS: tuple[str, ...] = ("green", "blue", "yellow", "orange", "red")
RAISE_AT: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)  # score at which blue..red start
IntArray = NDArray[np.int64]


def colour_level(colour: str) -> int:
    try:
        return COLOURS.index(colour)
    except ValueError:
        raise ValueError(f"unknown colour {colour!r}; colours are {', '.join(COLOURS)}") from None


@dataclass(frozen=True)
class LevelOutput:
    level: IntArray  # 0 green .. 4 red, per reading
    onset: BoolArray  # leaves green on this reading
    cleared: BoolArray  # returns to green on this reading


class LevelDecider:
    def __init__(
        self,
        *,
        clear_at: Sequence[float] | None = None,
        for_s: float | Sequence[float] = 0.0,
    ) -> None:
        clear = tuple(clear_at) if clear_at is not None else tuple(r - 0.02 for r in RAISE_AT)
        durations = (for_s,) * 4 if isinstance(for_s, int | float) else tuple(for_s)
        if len(clear) != 4 or len(durations) != 4:
            raise ValueError("clear_at and for_s need one value per level (blue..red)")
        if any(c > r for c, r in zip(clear, RAISE_AT, strict=True)):
            raise ValueError("a level's clear point must not lie above its start")
        if any(d < 0 for d in durations):
            raise ValueError("for_s must be >= 0")
        self.clear_at = np.array(clear)
        self.for_s = np.array(durations, dtype=np.float64)
        fields = {"level": 0.0} | {f"above_since_{k}": np.nan for k in range(4)}
        self._state = SeriesState(fields)

    def decide(self, series: Any, t: Any, scores: Any) -> LevelOutput:
        series, t, scores = as_batch(series, t, scores)
        n = len(series)
        level = np.zeros(n, dtype=np.int64)
        onset = np.zeros(n, dtype=bool)
        cleared = np.zeros(n, dtype=bool)
        if n == 0:
            return LevelOutput(level, onset, cleared)
        st = self._state
        st.grow(int(series.max()) + 1)
        raise_at = np.array(RAISE_AT)
        for positions in split_rounds(series):
            s, now, score = series[positions], t[positions], scores[positions]
            previous = st["level"][s].astype(np.int64)
            sustained = np.zeros(len(s), dtype=np.int64)
            held = np.zeros(len(s), dtype=np.int64)
            # Nearly every round has no score at blue's start, hence none at any higher
            # level's: no level sustained and every duration reset, in a few operations.
            anywhere_above = bool((score >= raise_at[0]).any())
            for k in range(4):
                key = f"above_since_{k}"
                if not anywhere_above:
                    st[key][s] = np.nan
                else:
                    above = score >= raise_at[k]
                    since = np.where(above, np.where(np.isnan(st[key][s]), now, st[key][s]), np.nan)
                    st[key][s] = since
                    ok = above & (now - since >= self.for_s[k])
                    sustained = np.where(ok, k + 1, sustained)
                held = np.where(score >= self.clear_at[k], k + 1, held)
            new = np.maximum(sustained, np.minimum(previous, held))
            st["level"][s] = new
            level[positions] = new
            onset[positions] = (previous == 0) & (new > 0)
            cleared[positions] = (previous > 0) & (new == 0)
        return LevelOutput(level, onset, cleared)

    def state(self) -> dict[str, FloatArray]:
        return self._state.snapshot()

    def restore(self, state: dict[str, FloatArray]) -> None:
        self._state.restore(state, "LevelDecider")

    def rewind(self, series: Any, t: Any) -> None:
        """As ``Detector.rewind``: a level's duration restarts at ``t``; the level stays."""
        self._state.rewind([f"above_since_{k}" for k in range(4)], series, t)
