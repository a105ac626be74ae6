"""The default chain ("auto"): five views of a series, each in the series' own units.

- ``raw``: the reading against the range its series has shown (range novelty): spikes,
  jumps, new extremes. A new extreme must also clear ``noise_multiple`` times the
  series' typical step, more while the range is young (``young_readings``: records in
  noise come at ~1/n), so plain noise setting small records stays quiet. With
  ``p_alert`` a break must also be rarer per reading than that, judged by how often and
  by how much this series breaks its range (peaks over threshold); ``alert_every_s``
  sets that rarity in device time instead (once in so many seconds of the series).
- ``smooth``: an exponentially weighted mean (``span`` readings) against the range of
  that mean: a move of the level that stays inside the raw noise band. Its records must
  clear ``smooth_noise_multiple`` typical steps of the mean.
- ``shift``: a smoothed level against a slow, clipped baseline, in units of the gap's
  own usual spread (``detectors.shift``): collective anomalies, and it keeps scoring
  while they last, so the alert stays active.
- ``cycle``: the reading and its recent mean against what this time of day or week
  usually shows, where a day or week profile explains the series (``detectors.cycle``).
- ``sequence``: how surprising this value is after the previous ones, calibrated as a
  likelihood against the series' own surprise (``detectors.sequence``).

Each part scores 0.5 at its alert level; the chain scores the largest. ``parts`` names
the parts to run (all by default).

Measured by ``bench/detectors.py``, the same defaults for every series (no per-file
parameters). Columns: NAB development split, standard profile, alerts as shipped; SKAB
valve2 F1 / FAR; alerts on the two noise fleets of tests/test_auto_detector.py (20
series x 4,000 readings with and without a daily cycle):

==============================  =====  ============  =======
chain                           NAB    SKAB F1/FAR   noise
==============================  =====  ============  =======
all five parts (the defaults)   70.9   0.79 / 13 %   4 + 4
  without ``cycle``             67.8   0.79 / 13 %   4 + 4
  without ``sequence``          69.7   0.79 / 13 %   4 + 4
  without either                66.4   0.79 / 13 %   4 + 4
  without ``shift``             69.9   0.26 / 9 %    4 + 4
``QUIET``                       49.1   0.75 / 5 %    0 + 0
==============================  =====  ============  =======

The defaults are the grid point with the best cross-validated mean over NAB's
categories among those quiet on the noise fleets (bench/detector_grid.py); the rows
without a part were measured with the week profile in 84 bins (now 28: 70.9). They are
chosen where a false alert costs a ninth of a missed anomaly; the collector runs each
device family's series with that family's own parameters over them (its plug-in's
``detection``, ``collector.statistical``), which keep a fleet watched around the clock
quiet (docs/detectors.md, "Noise against sensitivity").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from detectors.base import Detector, FloatArray, IntArray
from detectors.cycle import CycleProfile
from detectors.novelty import RangeNovelty
from detectors.registry import register
from detectors.sequence import SequenceContext
from detectors.shift import LevelShift

PARTS = ("raw", "smooth", "shift", "cycle", "sequence")
# For a fleet where every alert costs a phone call (docs/detectors.md, "Noise against
# sensitivity"): a range break must be rarer than once in 100,000 readings of its series,
# every range waits for a day of data, and sequence surprise must stand out further.
QUIET: dict[str, Any] = {
    "p_alert": 1e-5,
    "warmup_enough_readings": 100_000,
    "sequence": {"likelihood": {"floor": 0.12}},
}


@register
class AutoDetector(Detector):
    name = "auto"
    catches = frozenset({"spike", "shift", "drift"})
    state_fields: ClassVar[dict[str, float]] = {"smooth": math.nan}

    def __init__(
        self,
        *,
        span: int = 60,
        margin: float = 0.01,
        warmup_s: float = 86_400.0,
        warmup_readings: int = 30,
        warmup_enough_readings: int = 400,
        noise_multiple: float = 0.6,
        smooth_noise_multiple: float = 3.0,
        young_readings: int = 2000,
        p_alert: float | None = None,
        alert_every_s: float | None = None,
        shift: dict[str, Any] | None = None,
        cycle: dict[str, Any] | None = None,
        sequence: dict[str, Any] | None = None,
        parts: Sequence[str] = PARTS,
    ) -> None:
        super().__init__()
        if span < 1:
            raise ValueError("span must be >= 1")
        self.alpha = 2.0 / (span + 1.0)

        def novelty(noise: float, young: int = 0) -> RangeNovelty:
            return RangeNovelty(
                young_readings=young,
                margin=margin,
                warmup_s=warmup_s,
                warmup_readings=warmup_readings,
                warmup_enough_readings=warmup_enough_readings,
                noise_multiple=noise,
                p_alert=p_alert,
                alert_every_s=alert_every_s,
            )

        unknown = set(parts) - set(PARTS)
        if unknown or not parts:
            raise ValueError(
                f"parts must be some of {', '.join(PARTS)}; unknown: {sorted(unknown)}"
            )
        builders: dict[str, Callable[[], Detector]] = {
            "raw": lambda: novelty(noise_multiple, young_readings),
            "smooth": lambda: novelty(smooth_noise_multiple),
            "shift": lambda: LevelShift(**(shift or {})),
            "cycle": lambda: CycleProfile(**(cycle or {})),
            "sequence": lambda: SequenceContext(**(sequence or {})),
        }
        self.parts: dict[str, Detector] = {
            name: builders[name]() for name in PARTS if name in parts
        }

    def grow(self, needed: int) -> None:
        super().grow(needed)
        for part in self.parts.values():
            part.grow(needed)

    def _score_round(self, series: IntArray, t: FloatArray, x: FloatArray) -> FloatArray:
        previous = self._state["smooth"][series]
        smooth = np.where(np.isnan(previous), x, previous + self.alpha * (x - previous))
        self._state["smooth"][series] = smooth
        scores: FloatArray = np.zeros(len(series))
        for name, part in self.parts.items():
            part_scores = part.score_round(series, t, smooth if name == "smooth" else x)
            np.maximum(scores, part_scores, out=scores)
        return scores

    def rewind(self, series: Any, t: Any) -> None:
        for part in self.parts.values():
            part.rewind(series, t)

    def state(self) -> dict[str, FloatArray]:
        merged = {
            f"{name}.{k}": v for name, part in self.parts.items() for k, v in part.state().items()
        }
        merged["smooth"] = super().state()["smooth"]
        return merged

    def restore(self, state: dict[str, FloatArray]) -> None:
        for name, part in self.parts.items():
            prefix = f"{name}."
            part.restore({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
        super().restore({"smooth": state["smooth"]})
