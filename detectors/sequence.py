"""Sequence context: how surprising this value is after the ones just before it.

Readings are quantised into ``levels`` equal bands of the range the series has shown.
Per series a table counts which band followed each context of the previous ``order``
bands (one by default: with more, the table grows as ``levels ** (order + 1)`` and
measured no better) (``levels ** order`` contexts, ``levels`` counts each; the counts of a context
decay by ``forget`` at each use, so old habits fade). A reading's raw surprise is the
probability its band did *not* have after its context (with add-half smoothing, as
CAD-OSE and HTM's prediction error both do it in spirit: unpredicted means anomalous).

Surprise alone is noisy: a count series is unpredictable at every step. It is
therefore calibrated against the series' own recent surprise (``detectors.likelihood``):
only surprise well above what this series usually shows scores. What it catches: a
rhythm that breaks (bursts where the series was steady, a key held down, spikes coming
denser), values inside the range in an order the series has not shown.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from detectors.base import Detector, FloatArray, IntArray, put_rows
from detectors.likelihood import Likelihood
from detectors.registry import register

# Surprise is common on any noisy series: only a rare excess of it scores.
LIKELIHOOD: dict[str, Any] = {"p_alert": 1e-10, "short": 20, "floor": 0.05}


@register
class SequenceContext(Detector):
    name = "sequence"
    catches = frozenset({"pattern"})
    state_fields: ClassVar[dict[str, float]] = {
        "counts": 0.0,
        "lo": math.inf,
        "hi": -math.inf,
        "context": 0.0,  # the previous bands, as one index
        "n": 0.0,
    }

    compact_fields: ClassVar[frozenset[str]] = frozenset({"counts"})

    def __init__(
        self,
        *,
        levels: int = 8,
        order: int = 1,
        forget: float = 0.999,
        warmup_readings: int = 400,
        likelihood: dict[str, Any] | None = None,
    ) -> None:
        self.levels, self.order = levels, order
        super().__init__()
        if levels < 2 or order < 1 or levels ** (order + 1) > 4096 or not 0 < forget <= 1:
            raise ValueError(
                "need levels >= 2, order >= 1, levels ** (order + 1) <= 4096, 0 < forget <= 1"
            )
        self.contexts = levels**order
        self.forget, self.warmup_readings = forget, warmup_readings
        self.likelihood = Likelihood(**(LIKELIHOOD | (likelihood or {})))

    def _widths(self) -> dict[str, int]:
        return {"counts": self.levels ** (self.order + 1)}

    def grow(self, needed: int) -> None:
        super().grow(needed)
        if self.likelihood is not None:
            self.likelihood.grow(needed)

    def state(self) -> dict[str, FloatArray]:
        out = super().state()
        return out | {f"likelihood.{k}": v for k, v in self.likelihood.state().items()}

    def restore(self, state: dict[str, FloatArray]) -> None:
        super().restore({k: v for k, v in state.items() if not k.startswith("likelihood.")})
        self.likelihood.restore(
            {k[11:]: v for k, v in state.items() if k.startswith("likelihood.")}
        )

    def _score_round(self, series: IntArray, t: FloatArray, x: FloatArray) -> FloatArray:
        st = self._state
        lo = np.minimum(st["lo"][series], x)
        hi = np.maximum(st["hi"][series], x)
        width = np.maximum(hi - lo, 1e-12)
        band = np.minimum((self.levels * (x - lo) / width).astype(np.int64), self.levels - 1)
        context = st["context"][series].astype(np.int64)
        n = st["n"][series]
        # Each context's counts are one row of ``levels`` values: gathered at once.
        table = st["counts"].reshape(-1, self.levels)
        rows = series * self.contexts + context
        slab = table.take(rows, axis=0)
        picked = np.arange(len(series)), band
        probability = (slab[picked] + 0.5) / (slab.sum(axis=1) + 0.5 * self.levels)
        warm = n >= self.order
        scores = self.likelihood.calibrate(series, 1.0 - probability, warm)
        scores = np.where(n >= self.warmup_readings, scores, 0.0)
        slab *= self.forget
        slab[picked] += warm
        put_rows(table, rows, slab)
        st["context"][series] = (context * self.levels + band) % self.contexts
        st["lo"][series], st["hi"][series] = lo, hi
        st["n"][series] = n + 1.0
        return scores
