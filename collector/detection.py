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
unjudged until real time catches up (collector/clocksteps.py).

Output: detection events, the moments a series changes colour (raised, changed,
cleared), each with the rule or detector that decided it. The silence watch adds
events for devices and gateways that stopped reporting (``check_silence``).
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson

from collector.clocksteps import ClockSteps
from collector.detectionevent import SYSTEM_FAMILY, DetectionEvent, EventKind
from collector.protocol import Reading
from collector.registry import Registry
from collector.rulerunner import RuleRunners
from collector.rules import RuleBook
from collector.seriestable import SeriesTable
from collector.silencecheck import FLEET, SilenceCheck
from collector.statistical import statistical_chains
from detectors.chain import GroupedChains
from detectors.levels import COLOURS, colour_level
from detectors.rules.silence import SilenceWatch

# The decisions' types and names are the engine's vocabulary: found here by its users.
__all__ = [
    "FLEET",
    "SYSTEM_FAMILY",
    "DetectionEngine",
    "DetectionEvent",
    "EventKind",
    "set_aside_damaged_state",
]

log = logging.getLogger(__name__)

STATISTICAL = "statistical"


class DetectionEngine:
    def __init__(
        self,
        rules: RuleBook,
        *,
        statistical: str | None = "auto",
        statistical_params: Mapping[str, Any] | None = None,
        statistical_family_params: Mapping[str, Mapping[str, Any]] | None = None,
        statistical_colour: str = "yellow",
        silence: SilenceWatch | None = None,
        clock_step_back_s: float = 10.0,
        max_series: int = 100_000,
    ) -> None:
        self.rules = rules
        self.series = SeriesTable(max_series)
        self.clock_steps = ClockSteps(clock_step_back_s)
        self.clock_steps_back = self.clock_steps.per_device  # per device
        self._chain_config = (
            statistical,
            dict(statistical_params or {}),
            dict(statistical_family_params or {}),
        )
        self.chain = statistical_chains(*self._chain_config)
        self.statistical_level = colour_level(statistical_colour)
        self.silence = silence or SilenceWatch()
        self._silence_check = SilenceCheck(self.silence)
        self._newest = np.full(0, -np.inf)
        self._rules = RuleRunners(rules)
        self._registry = Registry.empty()
        self.late_readings = 0
        self.judged_readings = 0

    # -- series bookkeeping ----------------------------------------------------------------

    @property
    def series_count(self) -> int:
        """(device, quantity) series the detectors keep state for."""
        return len(self.series)

    def series_of(self, device: str, family: str, quantity: str) -> int:
        """A field's series id, new series put in their family's chain; -1: not judged."""
        known = self.series.devices.get(device)
        found = known[1].get(quantity) if known else None
        if found is None:
            found = self.series.series_id(device, family, quantity)
            if found >= 0 and self.chain is not None:
                self.chain.assign(found, family)
        return found

    @property
    def series_refused(self) -> int:
        """Readings of series over ``max_series``: not judged."""
        return self.series.refused

    def series_names(self) -> list[tuple[str, str]]:
        """(device, quantity) of every series the detectors keep state for."""
        return self.series.names()

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
        for key, state in self._rules.state().items():
            arrays |= {f"{key}|{k}": v for k, v in state.items()}
        meta = {"format": self.STATE_FORMAT, **self.series.saved()}
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
            chain = self._restored_chain(arrays, [family for _, family, _ in meta["series"]])
        except FileNotFoundError:
            return False
        except Exception as exc:  # a damaged file: BadZipFile, EOFError, zlib.error, ...
            set_aside_damaged_state(path, exc)
            return False
        self.series.restore(meta["series"], meta["devices"])
        self._newest = arrays.pop("newest")
        groups: dict[str, dict[str, np.ndarray]] = {}
        for name, value in arrays.items():
            owner, _, key = name.rpartition("|")
            groups.setdefault(owner, {})[key] = value
        groups.pop("chain", None)
        self.chain = chain
        if "silence" in groups:
            self.silence.restore(groups.pop("silence"))
        self._rules.restore_later({k: v for k, v in groups.items() if k.startswith("rule:")})
        log.info("detector state restored", extra={"series": len(self.series), "path": str(path)})
        return True

    def _restored_chain(
        self, arrays: Mapping[str, np.ndarray], families: Sequence[str]
    ) -> GroupedChains | None:
        """New statistical chains holding the saved state; ValueError when the state was
        saved by other detectors (another version or other ``statistical_params``), which
        then start afresh, warmed up from history, instead of stopping the service."""
        chain = statistical_chains(*self._chain_config)
        if chain is None:
            return None
        for series, family in enumerate(families):  # in their first order: ids as saved
            chain.assign(series, family)
        saved = {k[len("chain|") :]: v for k, v in arrays.items() if k.startswith("chain|")}
        if saved:
            try:
                chain.restore(saved)
            except KeyError as exc:
                raise ValueError(f"the statistical detectors changed (no {exc})") from None
        return chain

    @property
    def catching_up(self) -> bool:
        """Whether the last silence check waited: the readings arriving were old."""
        return self._silence_check.catching_up

    def device_alive(self, device: str, now_s: float) -> bool:
        """Whether a device (a gateway, the fleet) still reports: ``SilenceCheck.alive``."""
        found = self.series.devices.get(device)
        return self._silence_check.alive(device, None if found is None else found[0], now_s)

    def check_silence(self, now_s: float, registry: Registry) -> list[DetectionEvent]:
        """Devices and gateways that went quiet, or came back, since the last check."""
        return self._silence_check.check(
            now_s, registry, self.series.device_names, self.series.device_family
        )

    def _rewind_stepped_clocks(self, ids: np.ndarray, times: np.ndarray, now: float) -> None:
        """Re-anchor the series of devices whose clock stepped back (collector/clocksteps.py)."""
        stepped = self.clock_steps.find(self.series, self._newest, ids, times, now)
        if not stepped:
            return
        rewound: list[int] = []
        anchors: list[float] = []
        for anchor, members in stepped.values():
            rewound += members
            anchors += [anchor] * len(members)
        series_ids = np.array(rewound, dtype=np.int64)
        to = np.array(anchors)
        # just before the anchor: the reading at the anchor is the series' next in order
        self._newest[series_ids] = np.minimum(self._newest[series_ids], np.nextafter(to, -np.inf))
        if self.chain is not None:
            self.chain.rewind(series_ids, to)
        self._rules.rewind(series_ids, to)
        devices = np.array(list(stepped), dtype=np.int64)
        self.silence.rewind(devices, [anchor for anchor, _ in stepped.values()])

    # -- the work --------------------------------------------------------------------------

    def process(
        self, readings: Sequence[Reading], registry: Registry, *, now_s: float | None = None
    ) -> list[DetectionEvent]:
        """Judge a batch of readings; the events it causes, in device-time order.

        ``now_s``: the collector's clock when they arrived (default: now).
        """
        now = time.time() if now_s is None else now_s
        table = self.series
        sid, t, x, device_ids, device_times, new_series = table.gather(readings)
        if new_series and self.chain is not None:
            self.chain.assign_all(new_series, [table.info[s][1] for s in new_series])
        if device_times:
            # a list's median in statistics: a third of numpy's time (its array made first)
            self._silence_check.note_lag(now - statistics.median(device_times))
        if not sid:
            self.silence.observe(device_ids, device_times)
            return []
        if registry is not self._registry:  # units, hence rules and capacities, may differ
            self._registry = registry
            self._rules.registry_changed()
        ids = np.array(sid, dtype=np.int64)
        times = np.array(t)
        values = np.array(x, dtype=np.float64)
        order = np.lexsort((times, ids))
        ids, times, values = ids[order], times[order], values[order]
        if len(self._newest) < len(table):
            self._newest = np.concatenate(
                [self._newest, np.full(len(table) - len(self._newest), -np.inf)]
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
        events += self._rules.judge(
            ids, times, values, info=table.info, registry=registry, event=self._event
        )
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
        device, family, quantity = self.series.info[series]
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
