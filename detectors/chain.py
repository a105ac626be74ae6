"""A detection chain: one detector scores, one decider turns scores into alerts.

The collector and ``smartunit backtest`` both run readings through a Chain, so what a
backtest shows is what the service would have raised.
"""

from __future__ import annotations

from collections.abc import Sequence
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


class GroupedChains:
    """One chain per group of series, each with its own parameters, behind the interface
    of one: a series belongs to the group it was first ``assign``-ed to (the collector's
    groups are device families: a gas reading and a crowd count are different signals).

    Series ids are global; each group's chain sees its own series as 0, 1, 2, ... in the
    order they were assigned, so assigning the same series in the same order after a
    restart gives every series back its own state.
    """

    SEPARATOR = "/"

    def __init__(self, chains: dict[str, Chain]) -> None:
        if any(self.SEPARATOR in name or not name for name in chains):
            raise ValueError(f"group names must be non-empty and without {self.SEPARATOR!r}")
        self.chains = chains
        self._names = list(chains)
        self._index = {name: index for index, name in enumerate(self._names)}
        self._group = np.full(0, -1, dtype=np.int64)  # global id -> group index
        self._local = np.full(0, -1, dtype=np.int64)  # global id -> id in its group's chain
        self._sizes = [0] * len(self._names)

    def _room_for(self, series: int) -> None:
        if series >= len(self._group):
            grown = max(series + 1, 2 * len(self._group), 16)
            self._group = np.concatenate([self._group, np.full(grown - len(self._group), -1)])
            self._local = np.concatenate([self._local, np.full(grown - len(self._local), -1)])

    def _group_index(self, group: str) -> int:
        index = self._index.get(group)
        if index is None:  # ValueError: a saved state naming it is another chain's
            raise ValueError(f"no chain for group {group!r}")
        return index

    def assign(self, series: int, group: str) -> None:
        """Put a new series in a group; a series keeps its first group."""
        self._room_for(series)
        if self._group[series] >= 0:
            return
        index = self._group_index(group)
        self._group[series] = index
        self._local[series] = self._sizes[index]
        self._sizes[index] += 1

    def assign_all(self, series: Sequence[int], groups: Sequence[str]) -> None:
        """``assign`` each of ``series`` to its group, in order: the same numbering.

        New series arrive by the thousand when a fleet is first seen (a collector
        restarting on a city's backlog); they are numbered in one step per group.
        """
        if not series:
            return
        ids = np.asarray(series, dtype=np.int64)
        self._room_for(int(ids.max()))
        if not ((ids[1:] > ids[:-1]).all() and (self._group[ids] < 0).all()):
            for one, group in zip(series, groups, strict=True):  # repeats, known ones
                self.assign(one, group)
            return
        indices = np.array([self._group_index(group) for group in groups], dtype=np.int64)
        for index in np.unique(indices).tolist():
            members = ids[indices == index]
            start = self._sizes[index]
            self._group[members] = index
            self._local[members] = np.arange(start, start + len(members))
            self._sizes[index] = start + len(members)

    def _split(self, series: np.ndarray) -> list[tuple[Chain, np.ndarray | slice]]:
        """(chain, positions of the batch it judges) per group present in the batch; a
        batch of one group (devices report in turn, so most are) is judged whole."""
        if len(series) == 0:
            return []
        if series.max() >= len(self._group) or (groups := self._group[series]).min() < 0:
            raise KeyError("a series was judged before it was assigned to a group")
        if (groups == groups[0]).all():
            return [(self.chains[self._names[groups[0]]], slice(None))]
        return [
            (self.chains[name], np.flatnonzero(groups == index))
            for index, name in enumerate(self._names)
            if (groups == index).any()
        ]

    def process(self, series: Any, t: Any, x: Any) -> ChainOutput:
        series = np.asarray(series, dtype=np.int64)
        t, x = np.asarray(t, dtype=np.float64), np.asarray(x, dtype=np.float64)
        n = len(series)
        out = ChainOutput(
            np.zeros(n), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        )
        for chain, positions in self._split(series):
            part = chain.process(self._local[series[positions]], t[positions], x[positions])
            out.score[positions], out.onset[positions] = part.score, part.onset
            out.active[positions], out.cleared[positions] = part.active, part.cleared
        return out

    def rewind(self, series: Any, t: Any) -> None:
        series = np.asarray(series, dtype=np.int64)
        to = np.asarray(t, dtype=np.float64)
        for chain, positions in self._split(series):
            chain.rewind(self._local[series[positions]], to[positions])

    def state(self) -> dict[str, FloatArray]:
        return {
            f"{name}{self.SEPARATOR}{key}": value
            for name, chain in self.chains.items()
            for key, value in chain.state().items()
        }

    def restore(self, state: dict[str, FloatArray]) -> None:
        """Restore after the series were assigned again, in their first order."""
        for name, chain in self.chains.items():
            prefix = name + self.SEPARATOR
            chain.restore({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})


def interleave(lengths: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(series id, row) of every row of several series, ordered row by row across series."""
    sid = np.concatenate([np.full(n, i, dtype=np.int64) for i, n in enumerate(lengths)])
    row = np.concatenate([np.arange(n, dtype=np.int64) for n in lengths])
    order = np.lexsort((sid, row))
    return sid[order], row[order]
