"""Detection at run time: the engine, its state on disk, its warm start, what it decides.

Readings are judged as they are decoded (``judge``); every decision becomes a point of
measurement ``detections`` (``record``) and goes to the subscriber the composition root
wired (the alerts). The detectors' state is saved every ``DETECTOR_STATE_SAVE_S`` and at
every clean stop, loaded at start; without a usable state the detectors warm up from
the last ``detection.warm_start_hours`` of history.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable

from collector.admission import QuantityAdmission
from collector.config import Settings
from collector.detection import DetectionEngine, DetectionEvent, set_aside_damaged_state
from collector.errors import StoreError
from collector.influx import InfluxClient
from collector.lineprotocol import encode_line, encode_tags
from collector.protocol import Reading
from collector.registry import Registry, RegistryHolder
from collector.rules import RuleBook
from collector.stats import IngestStats
from collector.storage import Batch
from collector.warmstart import HistoryReader
from detectors.levels import COLOURS
from detectors.rules.silence import SilenceWatch

log = logging.getLogger(__name__)

DETECTIONS_MEASUREMENT = "detections"
DETECTOR_STATE_FILE = "detector-state.npz"
DETECTOR_STATE_SAVE_S = 300.0  # and at every clean stop
EVENTS_PER_TURN = 50  # silence events recorded (alerts, webhooks queued) per loop turn

# Where a detection goes besides InfluxDB: the alerts, with the unit's hierarchy tags.
DetectionSink = Callable[[DetectionEvent, dict[str, str]], None]


class DetectionRuntime:
    def __init__(self, settings: Settings, *, registry: RegistryHolder, stats: IngestStats) -> None:
        self.settings = settings
        self.registry = registry
        self.stats = stats
        self.engine = build_engine(settings) if settings.detection.enabled else None
        self.sink: DetectionSink | None = None
        self.state_path = settings.data_dir / DETECTOR_STATE_FILE
        self._state_saving: asyncio.Future[None] | None = None
        self._needs_warm_start = False
        if self.engine is not None:
            try:
                self._needs_warm_start = not self.engine.load(self.state_path)
            except Exception as exc:  # a state that reads but does not fit this engine
                set_aside_damaged_state(self.state_path, exc)
                self.engine = build_engine(settings)  # nothing half-restored
                self._needs_warm_start = True

    @property
    def rules(self) -> RuleBook:
        if self.engine is not None:
            return self.engine.rules
        return RuleBook.load(self.settings.detection.rules)

    def device_alive(self, device: str, now: float) -> bool:
        return self.engine is not None and self.engine.device_alive(device, now)

    def judge(self, readings: list[Reading], registry: Registry) -> list[str]:
        """Judge readings; the lines recording what the detectors decided."""
        if self.engine is None or not readings:
            return []
        try:
            events = self.engine.process(readings, registry)
        except Exception:  # a detection bug must never cost a stored reading
            self.stats.detection_errors += 1
            log.exception("detection failed for a batch; its readings are stored regardless")
            return []
        return self.record(events, registry)

    def record(self, events: list[DetectionEvent], registry: Registry) -> list[str]:
        """Count, log and pass on decisions (of the detectors, or the collector's own
        operator alerts); the lines that store them."""
        lines = []
        for event in events:
            self.stats.detections[event.kind] += 1
            log.info(
                "detection",
                extra={
                    "kind": event.kind,
                    "detector": event.detector,
                    "device": event.device,
                    "quantity": event.quantity,
                    "colour": event.colour,
                    "previous_colour": event.previous_colour,
                    "value": event.value,
                },
            )
            lines.append(detection_line(event, registry))
            if self.sink is not None:
                try:
                    self.sink(event, _hierarchy_of(event.unit, registry))
                except Exception:  # a bug in the alert book must never stop ingest
                    self.stats.alert_errors += 1
                    log.exception(
                        "could not apply a detection to the alerts",
                        extra={"device": event.device, "detector": event.detector},
                    )
        return lines

    async def warm_start(self, influx: InfluxClient, admission: QuantityAdmission) -> None:
        """Judge recent history when there was no saved state, then admit what is known."""
        await self._warm_start(influx, admission)
        if self.engine is not None:  # what the detectors know stays admitted
            admission.seed(self.engine.series_names(), self.registry.current)

    async def _warm_start(self, influx: InfluxClient, admission: QuantityAdmission) -> None:
        detection = self.settings.detection
        hours = detection.warm_start_hours
        if self.engine is None or not self._needs_warm_start or hours <= 0:
            return
        end_ms = time.time_ns() // 1_000_000
        start_ms = end_ms - round(hours * 3_600_000)
        reader = HistoryReader(
            influx, max_points=detection.warm_start_max_points, known=admission.known
        )
        judged = 0
        try:
            async for readings in reader.pages(start_ms, end_ms):
                # What happened then is history: the events it would raise are not new.
                self.engine.process(readings, self.registry.current)
                judged += len(readings)
        except StoreError as exc:
            log.warning("warm start stopped: cannot read history: %s", exc)
            return
        log.info(
            "detectors warmed up from history",
            extra={
                "hours": hours,
                "readings": judged,
                "values": reader.returned,
                "budget_spent": reader.exhausted,
            },
        )

    async def watch_silence(self, store: Callable[[Batch], Awaitable[None]]) -> None:
        """Judge devices that fell silent, every ``detection.silence.check_interval_s``."""
        silence = self.settings.detection.silence
        if self.engine is None or not silence.enabled:
            return
        while True:
            await asyncio.sleep(silence.check_interval_s)
            registry = self.registry.current
            events = self.engine.check_silence(time.time(), registry)
            # A whole fleet can fall silent at once (a network cut): thousands of alerts,
            # recorded a slice at a time so that live readings and the API keep going.
            for start in range(0, len(events), EVENTS_PER_TURN):
                lines = self.record(events[start : start + EVENTS_PER_TURN], registry)
                await store(Batch(lines=lines))
                await asyncio.sleep(0)

    async def keep_state(self) -> None:
        """Save the detectors' state every ``DETECTOR_STATE_SAVE_S``."""
        if self.engine is None:
            return
        while True:
            await asyncio.sleep(DETECTOR_STATE_SAVE_S)
            await self.save_state()

    async def save_state(self) -> None:
        """Copied on the event loop (~10 ms at 26,000 series), compressed and synced in a
        worker thread: ~270 ms that every alert in flight would otherwise wait through."""
        if self.engine is None:
            return
        if self._state_saving is not None:  # one file, one writer, the newest state last
            await asyncio.gather(self._state_saving, return_exceptions=True)
        arrays = self.engine.snapshot()
        self._state_saving = asyncio.ensure_future(
            asyncio.to_thread(DetectionEngine.write_state, self.state_path, arrays)
        )
        try:
            await asyncio.shield(self._state_saving)  # a stop cancels the loop, not this
        except OSError as exc:
            log.error("could not save detector state to %s: %s", self.state_path, exc)


def build_engine(settings: Settings) -> DetectionEngine:
    detection = settings.detection
    silence = detection.silence
    return DetectionEngine(
        RuleBook.load(detection.rules),
        statistical=detection.statistical,
        statistical_params=detection.statistical_params,
        statistical_colour=detection.statistical_colour,
        clock_step_back_s=detection.clock_step_back_s,
        max_series=detection.max_series,
        silence=SilenceWatch(
            timeout_s=silence.timeout_s,
            interval_multiple=silence.interval_multiple,
            minimum_s=silence.minimum_s,
            allowance_s=silence.allowance_s,
            fleet_share=silence.fleet_share,
            fleet_min=silence.fleet_min,
        ),
    )


def detection_line(event: DetectionEvent, registry: Registry) -> str:
    """A detection as a point of measurement ``detections``, placed like its readings."""
    extra = {
        "detector": event.detector,
        "colour": event.colour,
        "kind": event.kind,
        "family": event.family,
        "quantity": event.quantity,
    }
    if event.family == "gateway":
        shared = _gateway_places(registry).get(event.device, {})
        tags = encode_tags({"device": event.device, **shared, **extra})
    else:
        tags = f"{registry.placement(event.device).tags},{encode_tags(extra)}"
    fields: dict[str, int | float | str] = {
        "level": COLOURS.index(event.colour),
        "previous_colour": event.previous_colour,
        "score": event.score,
    }
    if math.isfinite(event.value):
        fields["value"] = event.value
    if event.threshold is not None:
        fields["threshold"] = event.threshold
    return encode_line(DETECTIONS_MEASUREMENT, tags, fields, event.ts_ms)


# A gateway has no unit of its own: its detections carry the unit and the hierarchy
# levels all its devices share, so a dashboard filtered to a grid shows the gateway whose
# devices are all there. Registries compare by identity: a reloaded one is worked out anew.
@functools.lru_cache(maxsize=1)
def _gateway_places(registry: Registry) -> dict[str, dict[str, str]]:
    shared: dict[str, dict[str, str]] = {}
    for device in registry.devices.values():
        if device.gateway is None:
            continue
        unit = registry.units[device.unit]
        tags = {"unit": unit.id, **unit.hierarchy.as_tags()}
        known = shared.setdefault(device.gateway, tags)
        shared[device.gateway] = {k: v for k, v in known.items() if tags.get(k) == v}
    return shared


def _hierarchy_of(unit: str, registry: Registry) -> dict[str, str]:
    found = registry.units.get(unit)
    return found.hierarchy.as_tags() if found is not None else {}
