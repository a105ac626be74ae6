"""The rule book at run time: which rules watch each series, and what they decide.

Which rules watch a series depends on its family, quantity, device and unit (from the
registry): worked out once per series and registry (once per family and quantity where
no rule names a unit or device), then shared by every series with the same selection.
Each rule is one detector and one level decider over all the series it watches, judged
a batch at a time (vectorised). A rule's state is saved under a key
of its definition: a rule whose definition changed starts afresh.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from collector.detectionevent import DetectionEvent
from collector.registry import Registry
from collector.rules import MAX_CACHED_QUANTITIES, RuleBook, RuleSpec
from detectors.base import Detector
from detectors.levels import COLOURS, LevelDecider

# (device, family, quantity) of each series, by series id
SeriesInfo = Sequence[tuple[str, str, str]]


@dataclass
class RuleRunner:
    spec: RuleSpec
    detector: Detector
    decider: LevelDecider
    last_level: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def key(self) -> str:
        """Identity for saved state: a rule whose definition changed starts afresh."""
        spec = self.spec
        definition = [
            spec.name,
            spec.detector,
            spec.params,
            spec.units,
            spec.devices,
            spec.capacity_from,
        ]
        text = json.dumps(definition, sort_keys=True, default=str)
        return "rule:" + hashlib.sha256(text.encode()).hexdigest()[:24]

    def state(self) -> dict[str, np.ndarray]:
        out = {f"detector.{k}": v for k, v in self.detector.state().items()}
        out |= {f"decider.{k}": v for k, v in self.decider.state().items()}
        return out | {"last_level": self.last_level.astype(np.float64)}

    def restore(self, state: dict[str, np.ndarray]) -> None:
        self.detector.restore({k[9:]: v for k, v in state.items() if k.startswith("detector.")})
        self.decider.restore({k[8:]: v for k, v in state.items() if k.startswith("decider.")})
        self.last_level = state["last_level"].astype(np.int64)


class RuleRunners:
    def __init__(self, rules: RuleBook) -> None:
        self.rules = rules
        self._runners: dict[int, RuleRunner] = {}  # by id(spec): specs live in the rule book
        # Which rules watch each series depends on the registry (the unit): worked out once
        # per series and registry, as an index into ``_selections`` (-1: not yet).
        self._selection_of = np.full(0, -1, dtype=np.int64)
        self._selections: list[tuple[RuleRunner, ...]] = []
        self._selection_index: dict[tuple[int, ...], int] = {}
        # (family, quantity) -> its selection, for pairs whose rules name no unit or
        # device: a new series then needs neither its placement nor a rule-book lookup.
        # It depends on the rule book only, so it outlives registry changes.
        self._selection_by_quantity: dict[tuple[str, str], int] = {}
        self._capacity_of: dict[str, np.ndarray] = {}  # capacity_from -> per series, NaN: none
        self._saved: dict[str, dict[str, np.ndarray]] = {}  # rules not met since the start

    def registry_changed(self) -> None:
        """Units, hence rules and capacities, may differ: work them out again."""
        self._selection_of = np.full(0, -1, dtype=np.int64)
        self._capacity_of.clear()

    def state(self) -> dict[str, dict[str, np.ndarray]]:
        """Every rule's state by its key, those not met since the last start included."""
        saved = dict(self._saved)
        return saved | {runner.key: runner.state() for runner in self._runners.values()}

    def restore_later(self, saved: dict[str, dict[str, np.ndarray]]) -> None:
        """Saved rule states, restored when their rule is first met."""
        self._saved = saved

    def rewind(self, series_ids: np.ndarray, to: np.ndarray) -> None:
        for runner in self._runners.values():
            runner.detector.rewind(series_ids, to)
            runner.decider.rewind(series_ids, to)

    def _selection_for(self, series: int, info: SeriesInfo, registry: Registry) -> int:
        """The index in ``_selections`` of the rules that watch ``series``."""
        device, family, quantity = info[series]
        pair = (family, quantity)
        index = self._selection_by_quantity.get(pair)
        if index is not None:
            return index
        everywhere = self.rules.rules_everywhere(family, quantity)
        if everywhere is None:
            unit = registry.placement(device).unit
            return self._selection(self.rules.rules_for(family, quantity, unit, device))
        if len(self._selection_by_quantity) >= MAX_CACHED_QUANTITIES:
            self._selection_by_quantity.clear()
        index = self._selection_by_quantity[pair] = self._selection(everywhere)
        return index

    def _selection(self, specs: Sequence[RuleSpec]) -> int:
        """The index in ``_selections`` of these rules, added on first sight."""
        key = tuple(map(id, specs))  # a runner per spec: the same specs, the same runners
        index = self._selection_index.get(key)
        if index is None:
            index = self._selection_index[key] = len(self._selections)
            self._selections.append(tuple(map(self._runner, specs)))
        return index

    def _runner(self, spec: RuleSpec) -> RuleRunner:
        runner = self._runners.get(id(spec))
        if runner is None:
            detector = spec.build()
            runner = self._runners[id(spec)] = RuleRunner(spec, detector, detector.decider())
            saved = self._saved.pop(runner.key, None)
            if saved is not None:
                runner.restore(saved)
        return runner

    def _selections_for(self, ids: np.ndarray, info: SeriesInfo, registry: Registry) -> np.ndarray:
        """The rule selection (index into ``_selections``) of each of ``ids``."""
        if len(self._selection_of) < len(info):
            missing = len(info) - len(self._selection_of)
            self._selection_of = np.concatenate(
                [self._selection_of, np.full(missing, -1, dtype=np.int64)]
            )
        chosen = self._selection_of[ids]
        unknown = ids[chosen < 0]
        if len(unknown):
            # sorted by series already (the engine's order): repeats are neighbours
            unknown = unknown[np.append(True, unknown[1:] != unknown[:-1])]
            self._selection_of[unknown] = [
                self._selection_for(series, info, registry) for series in unknown.tolist()
            ]
        selected: np.ndarray = self._selection_of[ids]
        return selected

    def judge(
        self,
        ids: np.ndarray,
        times: np.ndarray,
        values: np.ndarray,
        *,
        info: SeriesInfo,
        registry: Registry,
        event: Callable[..., DetectionEvent],
    ) -> list[DetectionEvent]:
        """The colour changes the rules decide for a batch sorted by series, then time."""
        selection = self._selections_for(ids, info, registry)
        by_runner: dict[int, tuple[RuleRunner, list[np.ndarray]]] = {}
        for index in np.unique(selection).tolist():
            runners = self._selections[index]
            if runners:
                where = np.flatnonzero(selection == index)
                for runner in runners:
                    by_runner.setdefault(id(runner), (runner, []))[1].append(where)
        events: list[DetectionEvent] = []
        for runner, parts in by_runner.values():
            # ascending positions: by series, then by time, as the detectors need
            chosen = parts[0] if len(parts) == 1 else np.sort(np.concatenate(parts))
            s, now, x = ids[chosen], times[chosen], values[chosen]
            if runner.detector.context_fields:
                context = self._context(runner, info, registry)
                runner.detector.set_context(s, **{k: v[s] for k, v in context.items()})
            scores = runner.detector.score(s, now, x)
            levels = runner.decider.decide(s, now, scores).level.astype(np.int64)
            if len(runner.last_level) < len(info):
                grown = np.zeros(len(info), dtype=np.int64)
                grown[: len(runner.last_level)] = runner.last_level
                runner.last_level = grown
            # each position's level before it: the previous position of its series in
            # this batch, or what the series ended the last batch on
            before = runner.last_level[s]
            same_series = s[1:] == s[:-1]
            before[1:][same_series] = levels[:-1][same_series]
            last_of_series = np.flatnonzero(np.append(~same_series, True))
            runner.last_level[s[last_of_series]] = levels[last_of_series]
            for k in np.flatnonzero(before != levels).tolist():
                was, now_level = int(before[k]), int(levels[k])
                kind: Literal["raised", "changed", "cleared"] = (
                    "raised" if was == 0 else "cleared" if now_level == 0 else "changed"
                )
                events.append(
                    event(
                        kind=kind,
                        detector=runner.spec.name,
                        series=int(s[k]),
                        t=now[k],
                        value=x[k],
                        level=now_level,
                        previous=was,
                        score=float(scores[k]),
                        threshold=_threshold(runner, now_level, int(s[k])),
                    )
                )
        return events

    def _context(
        self, runner: RuleRunner, info: SeriesInfo, registry: Registry
    ) -> dict[str, np.ndarray]:
        """The series context (``Detector.context_fields``) a rule's detector needs, for
        every series: what the registry knows of each series' site."""
        context = {}
        for name in runner.detector.context_fields:
            if name == "capacity":
                context[name] = self._capacities(runner.spec.capacity_from, info, registry)
        return context

    def _capacities(
        self, capacity_from: str | None, info: SeriesInfo, registry: Registry
    ) -> np.ndarray:
        """The capacity a rule divides by, for every series (NaN: none known)."""
        kind = capacity_from or ""
        known = self._capacity_of.get(kind, np.full(0, np.nan))
        if len(known) < len(info):
            added = [np.nan] * (len(info) - len(known))
            if kind:
                # a device's series are numbered together: one placement per run of them
                device: str | None = None
                capacity = np.nan
                for at, (owner, _, _) in enumerate(info[len(known) :]):
                    if owner != device:
                        device, capacity = owner, _capacity(kind, owner, registry)
                    added[at] = capacity
            known = np.concatenate([known, np.array(added, dtype=np.float64)])
            self._capacity_of[kind] = known
        return known


def _capacity(kind: str, device: str, registry: Registry) -> float:
    """A device's capacity of this kind from the registry (NaN: none)."""
    placement = registry.placement(device)
    if kind == "capacity":
        return placement.capacity or np.nan
    unit = registry.units.get(placement.unit)
    return (unit.safe_capacity or np.nan) if unit is not None else np.nan


def _threshold(runner: RuleRunner, level: int, series: int) -> float | None:
    if level == 0:
        return None
    configured = runner.spec.params.get("levels", {}).get(COLOURS[level])
    if not isinstance(configured, int | float):
        return None  # a colour reached together with the next one has no value of its own
    return runner.detector.level_in_units(configured, series)
