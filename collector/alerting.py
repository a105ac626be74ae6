"""The alerts inside the running collector: what feeds them and what follows their changes.

- in: detections (``submit``, kept and retried in order while the store refuses writes)
  and on-site acknowledgements (``field_ack``);
- out, to the subscribers of every alert change: an ``alert_events`` point (Grafana's
  annotations, stored a batch per ``ANNOTATION_FLUSH_S``), the unit's retained state for
  its on-site panel and siren (the downlink), a wake-up for the webhook dispatcher;
- clocks: verification of resolved alerts and escalation of unacknowledged ones every
  ``alerts.verify_interval_s``, the restore of overwritten unit states, the retry of
  detections the store refused.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from collector.alerts.backends import STORE_ERRORS, open_storage
from collector.alerts.dispatch import Dispatcher
from collector.alerts.lifecycle import AlertBook
from collector.alerts.model import ACTIVE_STATES, Alert, AlertEvent, is_pseudo_unit
from collector.alerts.notify import Notifier
from collector.alerts.pending import PendingDetections
from collector.config import Settings
from collector.detection import DetectionEvent
from collector.errors import AlertActionError, FieldAckError
from collector.lineprotocol import encode_line
from collector.mqtt import Inbound
from collector.operator import OPERATOR_UNIT, OperatorAlarm, ReceiverWatch
from collector.protocol import Rejection
from collector.source import MessageSource
from collector.stats import IngestStats
from collector.storage import Batch
from collector.unitlink import (
    RESTORE_INTERVAL_S,
    UnitStates,
    parse_ack,
    parse_unit_topic,
    unit_state_body,
    unit_state_topic,
)

log = logging.getLogger(__name__)

ALERT_STORE_DETECTOR = "alert-store-unwritable"
ALERT_RETRY_TICK_S = 0.1  # how often the retry loop looks; its backoff decides attempts
ALERT_EVENTS_MEASUREMENT = "alert_events"
ANNOTATION_FLUSH_S = 1.0
EVENTS_PER_TURN = 50  # detections the store refused, retried per loop turn


class AlertWiring:
    def __init__(self, settings: Settings, *, source: MessageSource, stats: IngestStats) -> None:
        self.settings = settings
        self.stats = stats
        alerts = settings.alerts
        store = open_storage(
            alerts.store_url, relative_to=settings.data_dir, lease_s=alerts.claim_lease_s
        )
        notifier = Notifier(alerts.receivers, alerts.public_url)
        self.book = AlertBook(
            store,
            verify_window_s=alerts.verify_window_s,
            listeners=[self._annotate, self._downlink, self._dispatch_now],
            router=notifier.route,
        )
        self.unit_states = UnitStates(
            lambda topic, body: source.publish(topic, body, qos=1, retain=True),
            current=self._unit_state_now if store.shared else None,
        )
        self.unit_states.prime(self._unit_state_bodies())
        self.pending = PendingDetections(self.book.on_detection)
        # Whether this instance reads a device's data (None: it reads every device's);
        # set by the composition root when devices are shared out between instances.
        self.reads_device: Callable[[str], bool] | None = None
        self.dispatcher = Dispatcher(
            store.outbox,
            alerts.receivers,
            self.book,
            retry_initial_s=alerts.retry_initial_s,
            retry_max_s=alerts.retry_max_s,
        )
        # Red: alarms are not being stored. Raised through the store once it takes writes
        # again; until then the error log, /healthz and /metrics say so.
        self._store_alarm = OperatorAlarm(
            detector=ALERT_STORE_DETECTOR,
            quantity="waiting_detections",
            limit=1,
            collector=settings.mqtt.client_id,
            colour="red",
        )
        # Alert events can come from any thread (the HTTP API): lines wait here.
        self._annotations: collections.deque[str] = collections.deque()
        self.receiver_watch = ReceiverWatch(self.dispatcher.health())
        self.receiver_watch.resume(self.active_operator_alerts())

    def active_operator_alerts(self) -> list[Alert]:
        """The collector's own open alerts: their watches carry on where they were."""
        return self.book.find(states=sorted(ACTIVE_STATES), unit=OPERATOR_UNIT)

    def submit(self, event: DetectionEvent, hierarchy: dict[str, str]) -> None:
        """Stored now, or kept and retried until the store takes it.

        A detection stamped later than now (a device clock ahead of ours: its readings are
        stored as sent, up to ``ingest.max_future_s``) is taken as of now: the alert's
        start, and the acknowledgement deadline and escalation that count from it, must
        not wait for the device's future.
        """
        now_ms = time.time_ns() // 1_000_000
        if event.ts_ms > now_ms:
            event = dataclasses.replace(event, ts_ms=now_ms)
        self.pending.submit(event, hierarchy)

    def problems(self) -> list[str]:
        """What makes the service unhealthy beyond its broker connection, for /healthz."""
        pending = self.pending
        if not pending.degraded:
            return []
        return [
            f"alerting degraded: the alert store cannot be written, {len(pending)} "
            f"detections waiting ({pending.last_error})"
        ]

    def operator_checks(self, now_ms: int) -> list[DetectionEvent]:
        """Alerts on the alerting itself: the store refusing writes, receivers failing."""
        events = self._store_alarm.update(self.pending.take_peak(), now_ms)
        return events + self.receiver_watch.update(now_ms)

    def receivers(self) -> list[dict[str, Any]]:
        """Each receiver's health, backlog and operator alert: the API, /metrics, console."""
        return self.dispatcher.status(self.receiver_watch.raised)

    # -- subscribers of alert changes --------------------------------------------------------

    def _annotate(self, alert: Alert, events: Sequence[AlertEvent]) -> None:
        for event in events:
            self.stats.alert_events[event.type.value] += 1
            log.info(
                "alert event",
                extra={
                    "alert": event.alert_id,
                    "type": event.type.value,
                    "state": event.state.value,
                    "colour": event.colour,
                    "actor": event.actor,
                },
            )
            self._annotations.append(alert_event_line(event, alert))

    def _dispatch_now(self, alert: Alert, events: Sequence[AlertEvent]) -> None:
        self.dispatcher.wake()

    def _downlink(self, alert: Alert, events: Sequence[AlertEvent]) -> None:
        """The unit's worst active colour, retained for on-site displays and sirens."""
        states = sorted(ACTIVE_STATES)
        self.unit_states.publish(
            unit_state_topic(alert.unit),
            lambda: unit_state_body(alert.unit, self.book.find(states=states, unit=alert.unit)),
        )

    def _unit_state_bodies(self) -> dict[str, bytes]:
        """Every unit's retained state as the alert store has it now."""
        by_unit: dict[str, list[Alert]] = {}
        for alert in self.book.find(states=sorted(ACTIVE_STATES)):
            by_unit.setdefault(alert.unit, []).append(alert)
        return {unit_state_topic(u): unit_state_body(u, a) for u, a in by_unit.items()}

    # -- from the field ------------------------------------------------------------------------

    def field_ack(self, unit: str, message: Inbound) -> Rejection | None:
        """An on-site acknowledgement: ``{"alert_id": 42, "actor": "guard-3", "note": ...}``.

        The broker let only the unit's own principal publish here; the unit in the topic
        must still be a real one and the alert that unit's."""
        try:
            if is_pseudo_unit(unit):
                raise FieldAckError(f"{unit!r} is a pseudo-unit: its alerts have no on-site panel")
            alert_id, actor, note = parse_ack(message.payload)
            alert = self.book.get(alert_id)
            if alert is None or alert.unit != unit:
                raise FieldAckError(f"no alert {alert_id} in unit {unit!r}")
            self.book.acknowledge(
                alert_id,
                actor=f"field:{unit}:{actor}",
                note=note,
                now_ms=time.time_ns() // 1_000_000,
            )
        except AlertActionError as exc:  # the payload, the unit, or the alert's state
            preview = message.payload[:512].decode("utf-8", errors="replace")
            return Rejection("ack_refused", str(exc)[:200], "units", unit, payload=preview)
        return None

    # -- clocks ------------------------------------------------------------------------------

    async def restore_unit_states(self) -> None:
        """Overwritten unit states get the collector's again, once per interval at most."""
        shared = self.book.shared
        while True:
            await asyncio.sleep(RESTORE_INTERVAL_S)
            if not shared:
                self.unit_states.restore()
                continue
            try:  # it reads the shared store: off the event loop
                await asyncio.to_thread(self.unit_states.restore)
            except STORE_ERRORS as exc:
                log.error("unit states wait for the alert store", extra={"error": str(exc)})

    def _unit_state_now(self, topic: str) -> bytes:
        """What a unit's state topic should hold, as the shared store has it now."""
        states = sorted(ACTIVE_STATES)
        parsed = parse_unit_topic(topic)
        if parsed is not None and unit_state_topic(parsed[0]) == topic:
            return unit_state_body(parsed[0], self.book.find(states=states, unit=parsed[0]))
        # A unit whose name the topic level changed: found among all active alerts.
        matching = [a for a in self.book.find(states=states) if unit_state_topic(a.unit) == topic]
        return unit_state_body(matching[0].unit, matching) if matching else b""

    async def verify(
        self, alive: Callable[[str, float], bool], store: Callable[[Batch], Awaitable[None]]
    ) -> None:
        """Verify resolved alerts, and store every alert event as an annotation."""
        interval = self.settings.alerts.verify_interval_s
        last_verify = 0.0
        while True:
            await asyncio.sleep(min(interval, ANNOTATION_FLUSH_S))
            now = time.time()
            if now - last_verify >= interval:
                last_verify = now

                def alive_now(device: str, now: float = now) -> bool:
                    return alive(device, now)

                try:
                    # The book is thread-safe (the API uses it from threads too); off the
                    # event loop, a scan of every open alert never delays a live one.
                    await asyncio.to_thread(self._verify_and_escalate, round(now * 1000), alive_now)
                except STORE_ERRORS as exc:  # the clock waits for the store: no deadline lost
                    self.stats.alert_errors += 1
                    log.error("alert clock waits for the alert store", extra={"error": str(exc)})
                except Exception:  # keep verifying: the next tick may succeed
                    self.stats.alert_errors += 1
                    log.exception("alert verification failed")
            if self._annotations:
                lines = [self._annotations.popleft() for _ in range(len(self._annotations))]
                await store(Batch(lines=lines))

    def _verify_and_escalate(self, now_ms: int, alive: Callable[[str], bool]) -> None:
        clock = self.book.runs_clock()  # else another instance sharing the store runs it
        reads = self.reads_device
        if reads is not None:
            # Devices are shared out between instances (transport "nats"): only the one
            # reading a device knows whether it still reports, so each instance verifies
            # the alerts of its own devices; a change another made first is refused.
            self.book.verify(now_ms, lambda device: reads(device) and alive(device))
        elif clock:
            self.book.verify(now_ms, alive)
        if clock:
            self.book.escalate(now_ms, self.settings.alerts.ack_deadlines_s)

    async def retry_refused(self) -> None:
        """Store the detections the alert store refused, in order, a slice per turn."""
        pending = self.pending
        while True:
            await asyncio.sleep(ALERT_RETRY_TICK_S)
            while pending.due() and pending.retry(EVENTS_PER_TURN):
                await asyncio.sleep(0)

    async def aclose(self) -> None:
        await self.dispatcher.aclose()
        self.book.close()


def alert_event_line(event: AlertEvent, alert: Alert | None) -> str:
    """An alert event as a point of ``alert_events``: Grafana annotates with these."""
    tags = {"colour": event.colour, "state": event.state.value, "type": event.type.value}
    if alert is not None:
        tags |= {
            "family": alert.family,
            "unit": alert.unit,
            "device": alert.fingerprint.device,
            "detector": alert.fingerprint.detector,
            **alert.hierarchy,
        }
    fields: dict[str, int | float | str] = {
        "alert_id": event.alert_id,
        "seq": event.seq,
        "actor": event.actor,
        "note": event.note,
    }
    if event.value is not None and math.isfinite(event.value):
        fields["value"] = event.value
    return encode_line(ALERT_EVENTS_MEASUREMENT, tags, fields, event.at_ms)
