"""Detection inside the collector: every stored reading also goes through the detectors.

Each (device, quantity) is one series. The statistical chain (``auto`` by default)
watches every series; rules from the rule book watch the series they are selected for
(family, quantity, unit, device). Detectors need each series in device-time order:
readings not newer than the newest one already judged for their series (late data, a
backlog overlapping what came live, or a second reading in the same millisecond, which
InfluxDB also treats as the same point) are stored but not judged, and counted. One
exception: when the newest judged time lies ahead of the collector's clock and a reading
comes far older than it, the device's clock stepped back (or that newest came from the
future), and the device's series are re-anchored at the new reading instead of going
unjudged until real time catches up (``_rewind_stepped_clocks``).

Output: detection events, the moments a series changes colour (raised, changed,
cleared), each with the rule or detector that decided it. The silence watch adds
events for devices and gateways that stopped reporting (``check_silence``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson

from collector.admission import NOT_QUANTITIES
from collector.logs import RateLimitedLog
from collector.protocol import Reading
from collector.registry import Registry
from collector.rules import RuleBook, RuleSpec
from detectors.base import Detector
from detectors.chain import Chain
from detectors.levels import COLOURS, LevelDecider, colour_level
from detectors.rules.capacity import CapacityRule
from detectors.rules.silence import SilenceWatch

log = logging.getLogger(__name__)

STATISTICAL = "statistical"
SILENT_DEVICE = "yellow"
SILENT_GATEWAY = "orange"  # a gateway takes many devices with it
SILENT_FLEET = "red"  # most of the fleet at once: the command centre is blind
FLEET = "_fleet"  # the silent fleet's "device": no device id starts with "_"
SYSTEM_FAMILY = "system"  # alerts about the service itself, not about a device's readings
CLOCK_LOG_INTERVAL_S = 10.0


EventKind = Literal["raised", "changed", "cleared", "silent", "resumed"]


@dataclass(frozen=True)
class DetectionEvent:
    kind: EventKind
    detector: str  # rule name, "statistical", or "silence"
    device: str  # for a silent gateway: the gateway id
    family: str
    quantity: str
    unit: str
    colour: str
    previous_colour: str
    value: float
    ts_ms: int
    score: float = 0.0
    # The configured value the colour was raised at, in the quantity's unit (a capacity
    # rule's fraction times the site's capacity); None for statistical detections.
    threshold: float | None = None


@dataclass
class _RuleRunner:
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


# (device, family, quantity): a plain tuple of strings, which the garbage collector stops
# tracking; tens of thousands of objects would lengthen every full collection, a pause
# that alerts wait through.
_Series = tuple[str, str, str]


class DetectionEngine:
    def __init__(
        self,
        rules: RuleBook,
        *,
        statistical: str | None = "auto",
        statistical_params: Mapping[str, Any] | None = None,
        statistical_colour: str = "yellow",
        silence: SilenceWatch | None = None,
        clock_step_back_s: float = 10.0,
        max_series: int = 100_000,
    ) -> None:
        self.rules = rules
        self.max_series = max_series
        self.series_refused = 0  # readings of series over max_series: not judged
        self.clock_step_back_s = clock_step_back_s
        self._chain_config = (statistical, dict(statistical_params or {}))
        self.chain = (
            Chain.from_config(statistical, **(statistical_params or {})) if statistical else None
        )
        self.statistical_level = colour_level(statistical_colour)
        self.silence = silence or SilenceWatch()
        self._info: list[_Series] = []
        self._newest = np.full(0, -np.inf)
        self._runners: dict[int, _RuleRunner] = {}  # by id(spec): specs live in the rule book
        # Which rules watch each series depends on the registry (the unit): worked out once
        # per series and registry, as an index into ``_selections`` (-1: not yet).
        self._selection_of = np.full(0, -1, dtype=np.int64)
        self._selections: list[tuple[_RuleRunner, ...]] = []
        self._selection_index: dict[tuple[int, ...], int] = {}
        self._capacity_of: dict[str, np.ndarray] = {}  # capacity_from -> per series, NaN: none
        self._registry = Registry.empty()
        # device -> (its id, {field: series id, -1 for a field that is not a quantity}):
        # what ``process`` asks of every reading, one lookup per device and one per field.
        self._devices: dict[str, tuple[int, dict[str, int]]] = {}
        self._device_names: list[str] = []
        self._gateway_names: list[str] = []
        self._gateway_index: dict[str, int] = {}
        self._grouped_by: Registry | None = None
        self._grouped = 0  # devices (in order of first sight) already given their gateway
        self._saved_rules: dict[str, dict[str, np.ndarray]] = {}
        self._lags: list[float] = []  # how old the readings of each batch were on arrival
        self.catching_up = False
        self.late_readings = 0
        self.judged_readings = 0
        self.clock_steps_back: Counter[str] = Counter()  # per device
        self._clock_log = RateLimitedLog(log, CLOCK_LOG_INTERVAL_S)

    # -- series bookkeeping ----------------------------------------------------------------

    @property
    def series_count(self) -> int:
        """(device, quantity) series the detectors keep state for."""
        return len(self._info)

    def _device(self, device: str) -> tuple[int, dict[str, int]]:
        found = self._devices.get(device)
        if found is None:
            found = self._devices[device] = (len(self._devices), {})
            self._device_names.append(device)
        return found

    def _series_id(self, device: str, family: str, quantity: str) -> int:
        """A field's series id, the series created on first sight; -1: not a quantity."""
        series_of = self._device(device)[1]
        found = series_of.get(quantity)
        if found is None:
            if quantity not in NOT_QUANTITIES and len(self._info) >= self.max_series:
                # not remembered either: names without end must not grow the table
                self.series_refused += 1
                return -1
            found = series_of[quantity] = -1 if quantity in NOT_QUANTITIES else len(self._info)
            if found >= 0:
                self._info.append((device, family, quantity))
        return found

    def series_names(self) -> list[tuple[str, str]]:
        """(device, quantity) of every series the detectors keep state for."""
        return [(device, quantity) for device, _, quantity in self._info]

    # -- restart without forgetting --------------------------------------------------------

    STATE_FORMAT = 1

    def snapshot(self) -> dict[str, np.ndarray]:
        """A copy of everything the detectors know, for ``write_state``.

        Copying is the cheap part; compressing and syncing it is not, and ``write_state``
        may do that in another thread while the detectors go on changing their state.
        """
        arrays: dict[str, np.ndarray] = {"newest": self._newest.copy()}
        if self.chain is not None:
            arrays |= {f"chain|{k}": v for k, v in self.chain.state().items()}
        arrays |= {f"silence|{k}": v for k, v in self.silence.state().items()}
        saved_rules = dict(self._saved_rules)  # rules not met since the last start
        saved_rules |= {runner.key: runner.state() for runner in self._runners.values()}
        for key, state in saved_rules.items():
            arrays |= {f"{key}|{k}": v for k, v in state.items()}
        meta = {"format": self.STATE_FORMAT, "series": self._info, "devices": self._device_names}
        arrays["meta"] = np.array(orjson.dumps(meta).decode())  # json: 10 ms at 26k series
        return arrays

    @staticmethod
    def write_state(path: Path, arrays: dict[str, np.ndarray]) -> None:
        """Write a ``snapshot`` atomically (temporary file, then rename)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        with temporary.open("wb") as handle:
            np.savez_compressed(handle, **arrays)  # type: ignore[arg-type]
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(path)

    def load(self, path: Path) -> bool:
        """Restore what ``write_state`` wrote; False (and a fresh start) if it cannot be used."""
        try:
            with np.load(path, allow_pickle=False) as stored:
                arrays = {key: stored[key] for key in stored.files}
            meta = json.loads(str(arrays.pop("meta")))
            if meta.get("format") != self.STATE_FORMAT:
                raise ValueError(f"state format {meta.get('format')}")
            chain = self._restored_chain(arrays)
        except FileNotFoundError:
            return False
        except Exception as exc:  # a damaged file: BadZipFile, EOFError, zlib.error, ...
            set_aside_damaged_state(path, exc)
            return False
        self._info = [(device, family, quantity) for device, family, quantity in meta["series"]]
        self._device_names = list(meta["devices"])
        self._devices = {d: (n, {}) for n, d in enumerate(self._device_names)}
        for n, (device, _, quantity) in enumerate(self._info):
            self._device(device)[1][quantity] = n
        self._newest = arrays.pop("newest")
        groups: dict[str, dict[str, np.ndarray]] = {}
        for name, value in arrays.items():
            owner, _, key = name.rpartition("|")
            groups.setdefault(owner, {})[key] = value
        groups.pop("chain", None)
        self.chain = chain
        if "silence" in groups:
            self.silence.restore(groups.pop("silence"))
        self._saved_rules = {k: v for k, v in groups.items() if k.startswith("rule:")}
        log.info("detector state restored", extra={"series": len(self._info), "path": str(path)})
        return True

    def _restored_chain(self, arrays: Mapping[str, np.ndarray]) -> Chain | None:
        """A new statistical chain holding the saved state; ValueError when the state was
        saved by other detectors (another version or other ``statistical_params``), which
        then start afresh, warmed up from history, instead of stopping the service."""
        name, params = self._chain_config
        if not name:
            return None
        chain = Chain.from_config(name, **params)
        saved = {k[len("chain|") :]: v for k, v in arrays.items() if k.startswith("chain|")}
        if saved:
            try:
                chain.restore(saved)
            except KeyError as exc:
                raise ValueError(f"the statistical detectors changed (no {exc})") from None
        return chain

    def device_alive(self, device: str, now_s: float) -> bool:
        """Whether a device's newest reading is within its silence timeout; for a
        gateway, any of its devices'; for the fleet, whether it was not silent at the
        last check. What an alert needs before it can be verified closed."""
        if device == FLEET:
            return not self.silence.fleet_silent
        found = self._devices.get(device)
        if found is not None:
            return bool(self.silence.alive(found[0], now_s))
        group = self._gateway_index.get(device)
        return group is not None and self.silence.group_alive(group, now_s)

    def check_silence(self, now_s: float, registry: Registry) -> list[DetectionEvent]:
        """Devices and gateways that went quiet, or came back, since the last check."""
        if self._grouped_by is not registry:  # a new registry: every device again
            self._gateway_names, self._gateway_index = [], {}
            self._grouped_by, self._grouped = registry, 0
        if self._grouped < len(self._device_names):  # devices seen since the last check
            new = self._device_names[self._grouped :]
            groups = []
            for device in new:
                known = registry.devices.get(device)
                gateway = known.gateway if known is not None else None
                if gateway and gateway not in self._gateway_index:
                    self._gateway_index[gateway] = len(self._gateway_names)
                    self._gateway_names.append(gateway)
                groups.append(self._gateway_index[gateway] if gateway else -1)
            self.silence.set_groups(np.arange(self._grouped, len(self._device_names)), groups)
            self._grouped = len(self._device_names)
        lags, self._lags = self._lags, []
        if lags and float(np.median(lags)) > self.silence.allowance_s:
            # The readings we are taking in are old: we are catching up a backlog (after an
            # outage of ours or of the network). Every device would look silent; none is.
            if not self.catching_up:
                log.warning(
                    "catching up a backlog: silence checks wait",
                    extra={"median_lag_s": round(float(np.median(lags)), 1)},
                )
            self.catching_up = True
            return []
        self.catching_up = False
        report = self.silence.check(now_s)
        ts_ms = round(now_s * 1000)
        events: list[DetectionEvent] = []

        def add(
            kind: EventKind,
            name: str,
            family: str,
            unit: str,
            colour: str,
            *,
            quantity: str = "",
            value: float = math.nan,
        ) -> None:
            previous = colour if kind == "resumed" else "green"
            shown = "green" if kind == "resumed" else colour
            events.append(
                DetectionEvent(
                    kind, "silence", name, family, quantity, unit, shown, previous, value, ts_ms
                )
            )

        kind: EventKind
        if report.fleet_started or report.fleet_recovered:
            kind = "silent" if report.fleet_started else "resumed"
            add(
                kind,
                FLEET,
                SYSTEM_FAMILY,
                "",
                SILENT_FLEET,
                quantity="silent_devices",
                value=report.quiet,
            )
            if report.fleet_started:
                log.error(
                    "most of the fleet stopped reporting at once: one alert stands for it",
                    extra={"silent_devices": report.quiet},
                )

        for device_id in report.started.tolist() + report.recovered.tolist():
            device = self._device_names[device_id]
            known = registry.devices.get(device)
            kind = "silent" if device_id in report.started else "resumed"
            add(
                kind,
                device,
                known.family if known else "",
                registry.placement(device).unit,
                SILENT_DEVICE,
            )
        for group in report.groups_started.tolist() + report.groups_recovered.tolist():
            kind = "silent" if group in report.groups_started else "resumed"
            add(kind, self._gateway_names[group], "gateway", "", SILENT_GATEWAY)
        return events

    def _selection_for(self, series: int, registry: Registry) -> int:
        """The index in ``_selections`` of the rules that watch ``series``."""
        device, family, quantity = self._info[series]
        specs = self.rules.rules_for(family, quantity, registry.placement(device).unit, device)
        key = tuple(map(id, specs))  # a runner per spec: the same specs, the same runners
        index = self._selection_index.get(key)
        if index is None:
            index = self._selection_index[key] = len(self._selections)
            self._selections.append(tuple(map(self._runner, specs)))
        return index

    def _runner(self, spec: RuleSpec) -> _RuleRunner:
        runner = self._runners.get(id(spec))
        if runner is None:
            detector = spec.build()
            decider = detector.decider() if hasattr(detector, "decider") else LevelDecider()
            runner = self._runners[id(spec)] = _RuleRunner(spec, detector, decider)
            saved = self._saved_rules.pop(runner.key, None)
            if saved is not None:
                runner.restore(saved)
        return runner

    def _selections_for(self, ids: np.ndarray, registry: Registry) -> np.ndarray:
        """The rule selection (index into ``_selections``) of each of ``ids``."""
        if len(self._selection_of) < len(self._info):
            missing = len(self._info) - len(self._selection_of)
            self._selection_of = np.concatenate(
                [self._selection_of, np.full(missing, -1, dtype=np.int64)]
            )
        chosen = self._selection_of[ids]
        unknown = np.unique(ids[chosen < 0])
        if len(unknown):
            self._selection_of[unknown] = [
                self._selection_for(series, registry) for series in unknown.tolist()
            ]
        selected: np.ndarray = self._selection_of[ids]
        return selected

    def _rewind_stepped_clocks(self, ids: np.ndarray, times: np.ndarray, now: float) -> None:
        """Re-anchor the series of devices whose clock stepped back.

        A reading older than its series' newest judged one is late and not judged. But
        when that newest lies in the future of the collector's clock (one reading from
        the future, or a device clock running ahead that NTP then set back), waiting for
        real time to catch up would leave the series unjudged for as long as the clock
        was ahead: an alarm at real time would go unseen. A reading more than
        ``clock_step_back_s`` older than such a newest is a step back of its device's
        clock: every series of that device is re-anchored at the reading (its own and
        the detectors' times after it move back to it), counted and logged.
        """
        tolerance = self.clock_step_back_s
        newest = self._newest[ids]
        stepped = (newest > now + tolerance) & (newest - times > tolerance)
        if not stepped.any():
            return
        anchor_of: dict[int, float] = {}  # device id -> the earliest stepped-back time
        for series, when in zip(ids[stepped].tolist(), times[stepped].tolist(), strict=True):
            device_id = self._devices[self._info[series][0]][0]
            anchor_of[device_id] = min(anchor_of.get(device_id, when), when)
        rewound: list[int] = []
        anchors: list[float] = []
        for device_id, anchor in anchor_of.items():
            device = self._device_names[device_id]
            members = [n for n in self._devices[device][1].values() if n >= 0]
            step_s = float(self._newest[members].max()) - anchor
            rewound += members
            anchors += [anchor] * len(members)
            self.clock_steps_back[device] += 1
            self._clock_log.warning(
                "clock_step_back",
                "device clock stepped back: its series are re-anchored at its new time",
                device=device,
                step_s=round(step_s, 3),
                steps_back=self.clock_steps_back[device],
            )
        series_ids = np.array(rewound, dtype=np.int64)
        to = np.array(anchors)
        # just before the anchor: the reading at the anchor is the series' next in order
        self._newest[series_ids] = np.minimum(self._newest[series_ids], np.nextafter(to, -np.inf))
        if self.chain is not None:
            self.chain.rewind(series_ids, to)
        for runner in self._runners.values():
            runner.detector.rewind(series_ids, to)
            runner.decider.rewind(series_ids, to)
        self.silence.rewind(np.array(list(anchor_of), dtype=np.int64), list(anchor_of.values()))

    # -- the work --------------------------------------------------------------------------

    def process(
        self, readings: Sequence[Reading], registry: Registry, *, now_s: float | None = None
    ) -> list[DetectionEvent]:
        """Judge a batch of readings; the events it causes, in device-time order.

        ``now_s``: the collector's clock when they arrived (default: now).
        """
        now = time.time() if now_s is None else now_s
        sid: list[int] = []
        t: list[float] = []
        x: list[float] = []
        device_ids: list[int] = []
        device_times: list[float] = []
        devices = self._devices
        add_series, add_time, add_value = sid.append, t.append, x.append
        for family, device, ts_ms, fields, _ in readings:
            seconds = ts_ms / 1000.0
            device_id, series_of = devices.get(device) or self._device(device)
            device_ids.append(device_id)
            device_times.append(seconds)
            for quantity, value in fields.items():
                found = series_of.get(quantity)
                if found is None:
                    found = self._series_id(device, family, quantity)
                if found >= 0:
                    add_series(found)
                    add_time(seconds)
                    add_value(value)
        if device_times:
            self._lags.append(now - float(np.median(device_times)))
        if not sid:
            self.silence.observe(device_ids, device_times)
            return []
        if registry is not self._registry:  # units, hence rules and capacities, may differ
            self._registry = registry
            self._selection_of = np.full(0, -1, dtype=np.int64)
            self._capacity_of.clear()
        ids = np.array(sid, dtype=np.int64)
        times = np.array(t)
        values = np.array(x, dtype=np.float64)
        order = np.lexsort((times, ids))
        ids, times, values = ids[order], times[order], values[order]
        if len(self._newest) < len(self._info):
            self._newest = np.concatenate(
                [self._newest, np.full(len(self._info) - len(self._newest), -np.inf)]
            )
        self._rewind_stepped_clocks(ids, times, now)
        self.silence.observe(device_ids, device_times)
        # in time order per series, and never older than what was judged already
        previous_in_batch = np.concatenate(([-np.inf], times[:-1]))
        same_series = np.concatenate(([False], ids[1:] == ids[:-1]))
        floor = np.where(
            same_series, np.maximum(previous_in_batch, self._newest[ids]), self._newest[ids]
        )
        fresh = times > floor
        self.late_readings += int((~fresh).sum())
        ids, times, values = ids[fresh], times[fresh], values[fresh]
        if len(ids) == 0:
            return []
        np.maximum.at(self._newest, ids, times)
        self.judged_readings += len(ids)

        events = self._statistical(ids, times, values)
        events += self._rules(ids, times, values, registry)
        events.sort(key=lambda e: e.ts_ms)
        return events

    def _statistical(
        self, ids: np.ndarray, times: np.ndarray, values: np.ndarray
    ) -> list[DetectionEvent]:
        if self.chain is None:
            return []
        out = self.chain.process(ids, times, values)
        events = []
        level = self.statistical_level
        cases: tuple[tuple[Literal["raised", "cleared"], np.ndarray, int, int], ...] = (
            ("raised", out.onset, level, 0),
            ("cleared", out.cleared, 0, level),
        )
        for kind, mask, colour, previous in cases:
            for p in np.flatnonzero(mask):
                events.append(
                    self._event(
                        kind=kind,
                        detector=STATISTICAL,
                        series=int(ids[p]),
                        t=times[p],
                        value=values[p],
                        level=colour,
                        previous=previous,
                        score=float(out.score[p]),
                    )
                )
        return events

    def _rules(
        self, ids: np.ndarray, times: np.ndarray, values: np.ndarray, registry: Registry
    ) -> list[DetectionEvent]:
        selection = self._selections_for(ids, registry)
        by_runner: dict[int, tuple[_RuleRunner, list[np.ndarray]]] = {}
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
            capacity = None
            if isinstance(runner.detector, CapacityRule):
                capacity = self._capacities(runner.spec.capacity_from, registry)[s]
                runner.detector.set_capacity(s, capacity)
            scores = runner.detector.score(s, now, x)
            levels = runner.decider.decide(s, now, scores).level.astype(np.int64)
            if len(runner.last_level) < len(self._info):
                grown = np.zeros(len(self._info), dtype=np.int64)
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
                    self._event(
                        kind=kind,
                        detector=runner.spec.name,
                        series=int(s[k]),
                        t=now[k],
                        value=x[k],
                        level=now_level,
                        previous=was,
                        score=float(scores[k]),
                        threshold=_threshold(
                            runner, now_level, None if capacity is None else float(capacity[k])
                        ),
                    )
                )
        return events

    def _capacities(self, capacity_from: str | None, registry: Registry) -> np.ndarray:
        """The capacity a rule divides by, for every series (NaN: none known)."""
        kind = capacity_from or ""
        known = self._capacity_of.get(kind, np.full(0, np.nan))
        if len(known) < len(self._info):
            start = len(known)
            known = np.concatenate([known, np.full(len(self._info) - start, np.nan)])
            for sid in range(start, len(self._info)):
                placement = registry.placement(self._info[sid][0])
                unit = registry.units.get(placement.unit)
                if kind == "safe_capacity" and unit is not None:
                    known[sid] = unit.safe_capacity or np.nan
                elif kind == "capacity":
                    known[sid] = placement.capacity or np.nan
            self._capacity_of[kind] = known
        return known

    def _event(
        self,
        *,
        kind: Literal["raised", "changed", "cleared"],
        detector: str,
        series: int,
        t: float,
        value: float,
        level: int,
        previous: int,
        score: float,
        threshold: float | None = None,
    ) -> DetectionEvent:
        device, family, quantity = self._info[series]
        return DetectionEvent(
            kind,
            detector,
            device,
            family,
            quantity,
            self._registry.placement(device).unit,
            COLOURS[level],
            COLOURS[previous],
            float(value),
            round(float(t) * 1000),
            score,
            threshold,
        )


def _threshold(runner: _RuleRunner, level: int, capacity: float | None) -> float | None:
    if level == 0:
        return None
    configured = runner.spec.params.get("levels", {}).get(COLOURS[level])
    if not isinstance(configured, int | float):
        return None  # a colour reached together with the next one has no value of its own
    if isinstance(runner.detector, CapacityRule):
        return None if capacity is None or math.isnan(capacity) else configured * capacity
    return float(configured)


def set_aside_damaged_state(path: Path, error: BaseException) -> Path | None:
    """Keep a detector state that cannot be used beside it, for a post-mortem, and say so.

    Losing it costs what the detectors had learnt, which the warm start relearns from
    InfluxDB; refusing to start would cost every alarm until a person intervened.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    kept: Path | None = target
    try:
        path.replace(target)
    except OSError:
        kept = None
    log.error(
        "detector state cannot be used; starting afresh and warming up from history",
        extra={
            "path": str(path),
            "error": f"{type(error).__name__}: {error}"[:300],
            "kept_as": str(kept) if kept else None,
        },
    )
    return kept
