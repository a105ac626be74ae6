"""A detection chain: one detector scores, one decider turns scores into alerts.

The collector and ``smartunit backtest`` both run readings through a Chain, so what a
backtest shows is what the service would have raised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from detectors.base import BoolArray, Detector, FloatArray
from detectors.decide import AlertDecider
from detectors.registry import create


@dataclass(frozen=True)
class ChainOutput:
    score: FloatArray
    onset: BoolArray  # the reading that raises an alert
    active: BoolArray  # every reading while an alert is open
    cleared: BoolArray  # the reading on which an open alert closes


class Chain:
    def __init__(self, detector: Detector, decider: AlertDecider) -> None:
        self.detector = detector
        self.decider = decider

    @classmethod
    def from_config(
        cls, name: str = "auto", *, decide: dict[str, Any] | None = None, **params: Any
    ) -> Chain:
        return cls(create(name, **params), AlertDecider(**(decide or {})))

    def process(self, series: Any, t: Any, x: Any) -> ChainOutput:
        score = self.detector.score(series, t, x)
        decision = self.decider.decide(series, t, score)
        return ChainOutput(score, decision.onset, decision.active, decision.cleared)

    def rewind(self, series: Any, t: Any) -> None:
        """See ``Detector.rewind``; the decider counts readings, it holds no times."""
        self.detector.rewind(series, t)

    def state(self) -> dict[str, FloatArray]:
        out = {f"detector.{k}": v for k, v in self.detector.state().items()}
        return out | {f"decider.{k}": v for k, v in self.decider.state().items()}

    def restore(self, state: dict[str, FloatArray]) -> None:
        self.detector.restore({k[9:]: v for k, v in state.items() if k.startswith("detector.")})
        self.decider.restore({k[8:]: v for k, v in state.items() if k.startswith("decider.")})


def interleave(lengths: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(series id, row) of every row of several series, ordered row by row across series."""
    sid = np.concatenate([np.full(n, i, dtype=np.int64) for i, n in enumerate(lengths)])
    row = np.concatenate([np.arange(n, dtype=np.int64) for n in lengths])
    order = np.lexsort((sid, row))
    return sid[order], row[order]
