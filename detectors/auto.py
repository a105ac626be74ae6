"""The default chain ("auto"): range novelty at two time scales, one calibrated score.

- the raw reading against the range its series has shown: spikes, jumps, new extremes;
- an exponentially weighted mean (``span`` readings) against the range of that mean: a
  sustained shift that stays inside the noise band of the raw values, a drift.

Each part scores 0.5 at its alert level; the chain scores the larger of the two. Measured
by ``bench/detectors.py`` on NAB and SKAB: this pair beat each part alone and every other
pairing tried (raw with spans 5, 20, 60 and triples of them), with the same defaults for
every series.

A new extreme must also clear the series' typical step (``noise_multiple``, 1 by
default). Without it, NAB scores higher (66.5 instead of 64.6 for shipped alerts) but
plain noise keeps setting records (probability ~1/n at reading n), which raised 58
alerts on 20 quiet series of 4,000 readings against 1 with it: a command centre watching
10,000 series cannot take that. tests/test_auto_detector.py holds that line.

Also measured and left out of the chain (bench/detectors.py, NAB standard profile with
shipped alerts / false alerts on 20 quiet series of 4,000 readings): adding ``seasonal``
24.1 / 1, ``cusum`` 53.2 / 517, ``robust_z`` 19.8 / 1. On series with daily cycles a
slow baseline reads the cycle itself as deviation; those detectors serve where they fit
(stationary process values, slow drifts, clock-driven counts) when a rule names them.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from detectors.base import Detector, FloatArray, IntArray
from detectors.novelty import RangeNovelty
from detectors.registry import register


@register
class AutoDetector(Detector):
    name = "auto"
    catches = frozenset({"spike", "shift"})
    state_fields: ClassVar[dict[str, float]] = {"smooth": math.nan}

    def __init__(
        self,
        *,
        span: int = 60,
        margin: float = 0.01,
        warmup_s: float = 86_400.0,
        warmup_readings: int = 30,
        warmup_enough_readings: int = 400,
        noise_multiple: float = 1.0,
        smooth_noise_multiple: float | None = None,
    ) -> None:
        super().__init__()
        if span < 1:
            raise ValueError("span must be >= 1")
        self.alpha = 2.0 / (span + 1.0)

        def part(noise: float) -> RangeNovelty:
            return RangeNovelty(
                margin=margin,
                warmup_s=warmup_s,
                warmup_readings=warmup_readings,
                warmup_enough_readings=warmup_enough_readings,
                noise_multiple=noise,
            )

        self.raw = part(noise_multiple)
        self.smooth = part(
            noise_multiple if smooth_noise_multiple is None else smooth_noise_multiple
        )

    def score(self, series: Any, t: Any, x: Any) -> FloatArray:
        ids = np.asarray(series, dtype=np.int64)
        if len(ids):
            needed = int(ids.max()) + 1
            self.raw._state.grow(needed)
            self.smooth._state.grow(needed)
        return super().score(series, t, x)

    def _score_round(self, series: IntArray, t: FloatArray, x: FloatArray) -> FloatArray:
        previous = self._state["smooth"][series]
        smooth = np.where(np.isnan(previous), x, previous + self.alpha * (x - previous))
        self._state["smooth"][series] = smooth
        raw_score = self.raw._score_round(series, t, x)
        smooth_score = self.smooth._score_round(series, t, smooth)
        return np.maximum(raw_score, smooth_score)

    def state(self) -> dict[str, FloatArray]:
        merged = {f"raw.{k}": v for k, v in self.raw.state().items()}
        merged |= {f"smooth.{k}": v for k, v in self.smooth.state().items()}
        merged["smooth"] = super().state()["smooth"]
        return merged

    def restore(self, state: dict[str, FloatArray]) -> None:
        self.raw.restore({k[4:]: v for k, v in state.items() if k.startswith("raw.")})
        self.smooth.restore({k[7:]: v for k, v in state.items() if k.startswith("smooth.")})
        super().restore({"smooth": state["smooth"]})
