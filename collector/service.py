"""The collector: MQTT in, validated readings out to InfluxDB, rejections quarantined.

Pipeline and its bounds (every queue is bounded; what happens when it is full):

  receiver -> inbox -> decode task -> write queue -> write task -> InfluxDB | spool, PUBACK
              (deque)   (+ detectors)   (asyncio.Queue)

- receiver: ``mqttbulk`` on the event loop (default), or paho's network thread.
- inbox: bounded by MQTT v5 receive-maximum (``mqtt.receive_maximum``): the broker sends
  no more unacknowledged messages than that, and keeps the rest of the backlog itself.
  QoS 0 messages it does not count: the receiver stops reading while the inbox holds
  that many, and the broker queues (QoS 0: drops, past its limits) the rest.
- decode task: at most ``MESSAGES_PER_TURN`` messages per turn of the event loop
  (``MESSAGES_PER_URGENT_TURN`` while new alert events are being delivered); the
  detectors judge new readings within ``DETECT_EVERY_S``.
- write queue: ``ingest.write_queue_batches`` batches of at most ``ingest.batch_size``
  lines; when full, the decode task goes on decoding and judging (an alert never waits
  for storage) and keeps the judged batches until there is room, up to the
  receive-maximum in messages; then the broker holds further messages (QoS 0 ones,
  which it does not count, make the decode task wait instead).
- write task: up to ``ingest.write_concurrency`` hand-offs in flight. A batch InfluxDB
  does not take within ``ingest.spool_after_s`` goes to the disk spool (bounded; when
  full, it is retried with capped exponential backoff, forever, and its messages stay
  unacknowledged, so nothing is lost even if the collector is killed meanwhile). Lines
  InfluxDB refuses outright (400 after bisection, 413 for a single line) are dropped,
  logged and counted.

Messages are acknowledged in the order they arrived, after the batch holding their
readings is written, so a crash costs at most a redelivery; the duplicates it writes
collapse in InfluxDB (same device, same device time -> same point).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from collector.admission import QuantityAdmission
from collector.alerts.backends import open_storage
from collector.alerts.dispatch import Dispatcher
from collector.alerts.lifecycle import AlertBook
from collector.alerts.model import ACTIVE_STATES, Alert, AlertEvent
from collector.alerts.notify import Notifier
from collector.alerts.pending import PendingDetections
from collector.api import ApiContext, create_app
from collector.config import Settings
from collector.detection import DetectionEngine, DetectionEvent, set_aside_damaged_state
from collector.errors import RetryableStoreError, StoreError
from collector.fastpath import FastDecoder
from collector.influx import InfluxClient, query_sync, quote_ident, quote_literal, rows
from collector.lineprotocol import encode_line, encode_tags
from collector.logs import RateLimitedLog
from collector.metrics import Value
from collector.mqtt import Inbound, MqttSource
from collector.mqttbulk import BulkMqttSource
from collector.operator import (
    OPERATOR_UNIT,
    OperatorAlarm,
    RateLimitWatch,
    RecentMedian,
    SpoolWatch,
    cap_alert,
)
from collector.protocol import (
    DATA_SUBSCRIPTION,
    REJECTED_ROOT,
    STATUS_SUBSCRIPTION,
    TOPIC_ROOT,
    Decoder,
    Limits,
    Reading,
    Rejection,
    Topic,
    parse_topic,
    retained_rejection,
    status_line,
    topic_level,
)
from collector.ratelimit import DeviceRateLimit
from collector.registry import Registry, RegistryHolder
from collector.rules import RuleBook
from collector.snapshots import unit_status_lines
from collector.spool import DiskSpool, SpoolError
from collector.unitlink import (
    RESTORE_INTERVAL_S,
    UNIT_ACK_SUBSCRIPTION,
    UNIT_STATE_SUBSCRIPTION,
    UNIT_TOPIC_ROOT,
    UnitStates,
    is_pseudo_unit,
    parse_ack,
    parse_unit_topic,
    unit_state_body,
    unit_state_topic,
)
from collector.warmstart import HistoryReader
from detectors.levels import COLOURS
from detectors.rules.silence import SilenceWatch

log = logging.getLogger(__name__)

STATS_MEASUREMENT = "smartunit_ingest"
DETECTIONS_MEASUREMENT = "detections"
BEHIND_DETECTOR = "collector-behind"
ALERT_STORE_DETECTOR = "alert-store-unwritable"
ALERT_RETRY_TICK_S = 0.1  # how often the retry loop looks; its backoff decides attempts
ALERT_EVENTS_MEASUREMENT = "alert_events"
ANNOTATION_FLUSH_S = 1.0
DETECTOR_STATE_FILE = "detector-state.npz"
DETECTOR_STATE_SAVE_S = 300.0  # and at every clean stop
# Messages decoded and judged per turn of the event loop (~10 ms of work): what bounds how
# long a webhook, a write or the MQTT reader waits behind a backlog being taken in.
MESSAGES_PER_TURN = 500
MESSAGES_PER_URGENT_TURN = 50  # while new alert events are being delivered
DETECT_EVERY_S = 0.01  # readings wait at most this long for the detectors
EVENTS_PER_TURN = 50  # silence events recorded (alerts, webhooks queued) per loop turn
OWN_TOPICS = f"{TOPIC_ROOT}/_"  # rejections, collector status: never device input
REJECTIONS_MEASUREMENT = "smartunit_rejections"


@dataclass
class IngestStats:
    messages_received: int = 0
    readings_accepted: int = 0
    readings_stored: int = 0  # in InfluxDB or the spool, and acknowledged to the broker
    lines_written: int = 0
    write_requests: int = 0
    write_retries: int = 0
    batches_written: int = 0
    rejections: Counter[str] = field(default_factory=Counter)
    lines_dropped: Counter[str] = field(default_factory=Counter)
    detections: Counter[str] = field(default_factory=Counter)
    detection_errors: int = 0
    alert_events: Counter[str] = field(default_factory=Counter)
    alert_errors: int = 0
    outbox: dict[str, int] = field(default_factory=dict)
    # exponentially weighted mean of successful InfluxDB write round trips
    write_latency_ms: float = 0.0
    # median of (receive time - newest device time) per message, last stats interval
    arrival_age_s: float = 0.0
    spool_replayed: int = 0

    @property
    def rejected(self) -> int:
        return sum(self.rejections.values())

    def as_dict(self) -> dict[str, object]:
        return {
            "messages_received": self.messages_received,
            "readings_accepted": self.readings_accepted,
            "readings_stored": self.readings_stored,
            "lines_written": self.lines_written,
            "write_requests": self.write_requests,
            "write_retries": self.write_retries,
            "batches_written": self.batches_written,
            "rejected": self.rejected,
            "rejections": dict(self.rejections),
            "lines_dropped": dict(self.lines_dropped),
            "detections": dict(self.detections),
            "detection_errors": self.detection_errors,
            "alert_events": dict(self.alert_events),
            "alert_errors": self.alert_errors,
            "outbox": dict(self.outbox),
        }


@dataclass
class Batch:
    lines: list[str] = field(default_factory=list)
    messages: list[Inbound] = field(default_factory=list)
    readings: list[Reading] = field(default_factory=list)  # not judged yet
    reading_count: int = 0  # judged or not: what storing the batch stores
    started: float = field(default_factory=time.monotonic)


class Collector:
    def __init__(self, settings: Settings, registry: RegistryHolder) -> None:
        self.settings = settings
        self.registry = registry
        ingest = settings.ingest
        self.engine = build_engine(settings) if settings.detection.enabled else None
        rules = self.engine.rules if self.engine else RuleBook.load(settings.detection.rules)
        self.admission = QuantityAdmission(
            max_per_device=ingest.max_quantities_per_device,
            max_series=settings.detection.max_series,
            known=frozenset(rule.quantity for rule in rules.rules if rule.quantity != "*"),
        )
        self.decoder = Decoder(
            Limits(
                max_payload_bytes=ingest.max_payload_bytes,
                max_objects_per_message=ingest.max_objects_per_message,
                max_future_ms=round(ingest.max_future_s * 1000),
                max_age_ms=round(ingest.max_age_s * 1000),
            ),
            admission=self.admission,
        )
        self.fast_decoder = FastDecoder(self.decoder)
        self.spool = (
            DiskSpool(settings.data_dir / "spool", max_bytes=ingest.spool_max_bytes)
            if ingest.spool
            else None
        )
        self._spooled = asyncio.Event()
        self._arrival_ages = RecentMedian()  # per message, since the last stats interval
        collector_id = settings.mqtt.client_id
        self._behind = (
            OperatorAlarm(
                detector=BEHIND_DETECTOR,
                quantity="arrival_age_s",
                limit=ingest.behind_alert_s,
                collector=collector_id,
                intervals=2,
            )
            if ingest.behind_alert_s > 0
            else None
        )
        self._spool_watch = (
            SpoolWatch(self.spool, collector=collector_id) if self.spool is not None else None
        )
        self.rate_limit = (
            DeviceRateLimit(rate_per_s=ingest.device_rate_per_s, burst=ingest.device_burst)
            if ingest.device_rate_per_s > 0
            else None
        )
        self._rate_watch = RateLimitWatch(collector=collector_id) if self.rate_limit else None
        source = BulkMqttSource if settings.mqtt.receiver == "bulk" else MqttSource
        self.source: MqttSource | BulkMqttSource = source(
            settings.mqtt,
            [
                DATA_SUBSCRIPTION,
                STATUS_SUBSCRIPTION,
                UNIT_ACK_SUBSCRIPTION,
                UNIT_STATE_SUBSCRIPTION,
            ],
            status_topic=collector_status_topic(settings.mqtt.client_id),
            # the collector's own retained states must not come back as someone else's
            no_local=[UNIT_STATE_SUBSCRIPTION],
        )
        self.unit_states = UnitStates(
            lambda topic, body: self.source.publish(topic, body, qos=1, retain=True)
        )
        self.influx = InfluxClient(settings.influx)
        self.stats = IngestStats()
        self._queue: asyncio.Queue[Batch | None] = asyncio.Queue(ingest.write_queue_batches)
        self._side_puts = 0  # batches of other tasks waiting for room: they go first
        self._rejection_log = RateLimitedLog(log, settings.logging.rejection_log_interval_s)
        self._stopping = asyncio.Event()
        self._flush_deadline = math.inf
        self.alerts: AlertBook | None = None
        self._pending: PendingDetections | None = None
        # Red: alarms are not being stored. Raised through the store once it takes writes
        # again; until then the error log, /healthz and /metrics say so.
        self._store_alarm = OperatorAlarm(
            detector=ALERT_STORE_DETECTOR,
            quantity="waiting_detections",
            limit=1,
            collector=collector_id,
            colour="red",
        )
        if settings.alerts.enabled:
            store = open_storage(settings.alerts.store_url, relative_to=settings.data_dir)
            notifier = Notifier(settings.alerts.receivers, settings.alerts.public_url)
            self.alerts = AlertBook(
                store,
                verify_window_s=settings.alerts.verify_window_s,
                listeners=[self._annotate, self._downlink, self._dispatch_now],
                router=notifier.route,
            )
            self.unit_states.prime(self._unit_state_bodies())
            self._pending = PendingDetections(self.alerts.on_detection)
            self.dispatcher: Dispatcher | None = Dispatcher(
                store.outbox,
                settings.alerts.receivers,
                self.alerts,
                retry_initial_s=settings.alerts.retry_initial_s,
                retry_max_s=settings.alerts.retry_max_s,
            )
            active = self.alerts.find(states=sorted(ACTIVE_STATES), unit=OPERATOR_UNIT)
            if self._rate_watch is not None:
                self._rate_watch.resume(active)
            self.dispatcher.watch.resume(active)
        else:
            self.dispatcher = None
        # Alert events can come from any thread (the HTTP API): lines wait here.
        self._annotations: collections.deque[str] = collections.deque()
        self.state_path = settings.data_dir / DETECTOR_STATE_FILE
        self._state_saving: asyncio.Future[None] | None = None
        self._needs_warm_start = False
        self._frozen_registry: Registry | None = None
        if self.engine is not None:
            try:
                self._needs_warm_start = not self.engine.load(self.state_path)
            except Exception as exc:  # a state that reads but does not fit this engine
                set_aside_damaged_state(self.state_path, exc)
                self.engine = build_engine(settings)  # nothing half-restored
                self._needs_warm_start = True

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then flush everything received and return."""
        # Start-up asks InfluxDB for the database and the detectors' history, each for up
        # to influx.timeout_s while it hangs. Nothing is received yet, so a stop meanwhile
        # has nothing to flush, and must still stop us (a service manager's SIGTERM).
        starting = asyncio.ensure_future(self._start_up())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait([starting, stopped], return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            await self._close()
            log.info("stopped during start-up; nothing was received")
            return
        stopped.cancel()
        starting.result()  # what failed to start, raised
        self.source.start()
        tasks = [
            asyncio.create_task(self._decode_loop(), name="decode"),
            asyncio.create_task(self._write_loop(), name="write"),
            asyncio.create_task(
                self.registry.watch(self.settings.registry.reload_interval_s), name="registry"
            ),
            asyncio.create_task(self._stats_loop(), name="stats"),
            asyncio.create_task(self._silence_loop(), name="silence"),
            asyncio.create_task(self._verify_loop(), name="verify"),
            asyncio.create_task(self._unit_state_loop(), name="unit-states"),
            asyncio.create_task(self._alert_retry_loop(), name="alert-retry"),
        ]
        if self.spool is not None:
            if self.spool:
                self._spooled.set()  # left from before a restart: replay it
            tasks.append(asyncio.create_task(self._replay_loop(), name="replay"))
        if self.dispatcher is not None:
            tasks.append(asyncio.create_task(self.dispatcher.run(), name="dispatch"))
        api = self._api_server()
        if api is not None:
            tasks.append(asyncio.create_task(_serve(api), name="http"))
        decode, write = tasks[0], tasks[1]
        stop_wait = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait(
            [stop_wait, decode, write], return_when=asyncio.FIRST_COMPLETED
        )
        for task in done:
            if task is not stop_wait and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        log.info("stopping: flushing what was received")
        self._flush_deadline = time.monotonic() + self.settings.ingest.shutdown_flush_s
        self._stopping.set()
        self.source.wake()
        await asyncio.gather(decode, write)
        if api is not None:
            api.should_exit = True
            await asyncio.sleep(0.2)  # let it close its sockets before we cancel what is left
        for task in tasks[2:]:
            task.cancel()
        stop_wait.cancel()
        await asyncio.gather(*tasks[2:], stop_wait, return_exceptions=True)
        await self._write_stats()
        await self._save_detector_state()
        await self.source.aclose()
        await self._close()
        log.info("stopped", extra=self.stats.as_dict())

    async def _start_up(self) -> None:
        # Best effort: InfluxDB may be down now, and the spool covers that; a write that
        # finds the database missing later creates it (InfluxClient).
        await self.influx.ensure_database()
        await self._warm_start()
        if self.engine is not None:  # what the detectors know stays admitted
            self.admission.seed(self.engine.series_names(), self.registry.current)
        self._freeze_long_lived()

    async def _close(self) -> None:
        if self.dispatcher is not None:
            await self.dispatcher.aclose()
        if self.alerts is not None:
            self.alerts.close()
        await self.influx.aclose()

    def _api_server(self) -> uvicorn.Server | None:
        http = self.settings.http
        if not http.enabled or self.alerts is None:
            return None
        influx = self.settings.influx

        def series(
            family: str, device: str, quantity: str, start_ms: int, end_ms: int
        ) -> list[tuple[int, float]]:
            # about 600 points, whatever the window: a chart, not an export
            step_s = max(1, (end_ms - start_ms) // 600_000)
            query = (
                f"SELECT mean({quote_ident(quantity)}) FROM {quote_ident(family)} "
                f'WHERE "device" = {quote_literal(device)} '
                f"AND time >= {start_ms}ms AND time <= {end_ms}ms "
                f"GROUP BY time({step_s}s) fill(none)"
            )
            return [
                (int(r["time"]), float(r["mean"]))
                for s in query_sync(influx, query)
                for r in rows(s)
            ]

        app = create_app(
            ApiContext(
                book=self.alerts,
                tokens=http.tokens,
                public_url=self.settings.alerts.public_url,
                metrics=self.metrics,
                receivers=self.dispatcher.status if self.dispatcher is not None else list,
                healthy=self.source.connected.is_set,
                problems=self.problems,
                registry=lambda: self.registry.current,
                series=series,
                ack_deadlines_s=self.settings.alerts.ack_deadlines_s,
                max_body_bytes=http.max_body_bytes,
                body_timeout_s=http.body_timeout_s,
            )
        )
        config = uvicorn.Config(
            app,
            host=http.host,
            port=http.port,
            log_level="warning",
            lifespan="off",
            access_log=False,
            limit_concurrency=http.max_connections,
        )
        return _EmbeddedServer(config)

    def problems(self) -> list[str]:
        """What makes the service unhealthy beyond its broker connection, for /healthz."""
        pending = self._pending
        if pending is None or not pending.degraded:
            return []
        return [
            f"alerting degraded: the alert store cannot be written, {len(pending)} "
            f"detections waiting ({pending.last_error})"
        ]

    def metrics(self) -> dict[str, Value]:
        """What /metrics exposes, read now; each name is declared in collector.metrics."""
        s = self.stats
        spool = self.spool
        out: dict[str, Value] = {
            "messages_received_total": s.messages_received,
            "readings_accepted_total": s.readings_accepted,
            "readings_stored_total": s.readings_stored,
            "lines_written_total": s.lines_written,
            "write_retries_total": s.write_retries,
            "detection_errors_total": s.detection_errors,
            "alert_errors_total": s.alert_errors,
            "inbox_messages": self.source.backlog,
            "late_readings_total": self.engine.late_readings if self.engine else 0,
            "judged_readings_total": self.engine.judged_readings if self.engine else 0,
            "clock_steps_back_total": self.engine.clock_steps_back.total() if self.engine else 0,
            "detector_series": self.engine.series_count if self.engine else 0,
            "write_queue_batches": self._queue.qsize(),
            "arrival_age_seconds": s.arrival_age_s,
            "spool_bytes": self.spool.pending_bytes if self.spool else 0,
            "spool_fill_ratio": self.spool.fill_ratio if self.spool else 0.0,
            "spool_corrupt_records_total": spool.corrupt_records if spool is not None else 0,
            "spool_corrupt_bytes_total": spool.corrupt_bytes if spool is not None else 0,
            "spool_disk_full": int(self._spool_watch.disk_full.raised) if self._spool_watch else 0,
            "write_latency_seconds": s.write_latency_ms / 1000,
            "unit_state_overwrites_total": self.unit_states.overwrites,
            "rate_limited_devices": self._rate_watch.devices if self._rate_watch else 0,
        }
        # dict() copies in one step: the event loop may count a new key meanwhile
        out["rejections_total"] = dict(s.rejections)
        out["detections_total"] = dict(s.detections)
        out["alert_events_total"] = dict(s.alert_events)
        if self._pending is not None:
            out["alert_detections_waiting"] = len(self._pending)
            out["alert_store_failures_total"] = self._pending.failures
            out["alert_detections_dropped_total"] = self._pending.dropped
        if self.alerts is not None:
            out["outbox_entries"] = self.alerts.outbox_counts()
        if self.dispatcher is not None:
            receivers = self.dispatcher.status()

            def per_receiver(read: Callable[[dict[str, Any]], float]) -> dict[str, float]:
                return {r["name"]: read(r) for r in receivers}

            out |= {
                "webhook_pending": per_receiver(lambda r: r["pending"]),
                "webhook_oldest_pending_age_seconds": per_receiver(
                    lambda r: r["oldest_pending_age_s"] or 0.0
                ),
                "webhook_consecutive_failures": per_receiver(lambda r: r["consecutive_failures"]),
                "webhook_failing_seconds": per_receiver(lambda r: r["failing_for_s"]),
                "webhook_last_error_status": per_receiver(lambda r: r["last_status"] or 0),
                "webhook_dead_letters": per_receiver(lambda r: r["dead"]),
                "webhook_failing_alert": per_receiver(lambda r: int(r["alert"] is not None)),
            }
        return out

    async def _warm_start(self) -> None:
        detection = self.settings.detection
        hours = detection.warm_start_hours
        if self.engine is None or not self._needs_warm_start or hours <= 0:
            return
        end_ms = time.time_ns() // 1_000_000
        start_ms = end_ms - round(hours * 3_600_000)
        reader = HistoryReader(
            self.influx, max_points=detection.warm_start_max_points, known=self.admission.known
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

    # -- decode ----------------------------------------------------------------------------

    async def _decode_loop(self) -> None:
        """Decode and judge messages as they arrive; hand them to the writer in batches.

        The detectors see new readings within ``DETECT_EVERY_S``, not a whole write batch
        later: an alert waits for its reading to be decoded and judged, never for a batch
        to fill or for ``ingest.flush_interval_ms`` (bench/ingest.py measures that
        latency). Judging at most that often keeps the detectors' fixed cost per call
        (~1 ms) from growing with the number of small chunks a moderate load arrives in.
        """
        ingest = self.settings.ingest
        flush_s = ingest.flush_interval_ms / 1000
        batch = Batch()
        judge_by = math.inf  # when the oldest reading not judged yet must be
        # Judged batches the write queue has no room for yet: storage being slow must not
        # stop detection. Their messages are unacknowledged, so the broker sends no more
        # than mqtt.receive_maximum of them; only QoS 0 traffic could pass that, and there
        # the decode task waits for the writer.
        ready: collections.deque[Batch] = collections.deque()
        hold_at_most = self.settings.mqtt.receive_maximum
        while True:
            stopping = self._stopping.is_set()
            if stopping:
                timeout = 0.0
            elif batch.messages:
                timeout = max(min(judge_by, batch.started + flush_s) - time.monotonic(), 0.0)
            else:
                timeout = flush_s
            if ready:
                timeout = min(timeout, DETECT_EVERY_S)  # soon look again for room to hand off
            await self.source.wait(timeout)  # at once while messages are waiting
            urgent = self.dispatcher is not None and self.dispatcher.urgent
            per_turn = MESSAGES_PER_URGENT_TURN if urgent else MESSAGES_PER_TURN
            messages = self.source.drain(min(ingest.batch_size, per_turn))
            now = time.monotonic()
            if messages and not batch.messages:
                batch.started = now
            registry = self.registry.current
            self.stats.messages_received += len(messages)
            for message in messages:
                self._decode_one(message, batch, registry)
            batch.messages.extend(messages)
            if judge_by == math.inf and batch.readings:
                judge_by = now + DETECT_EVERY_S
            due = len(batch.lines) >= ingest.batch_size or (
                batch.messages and now - batch.started >= flush_s
            )
            if batch.readings and (due or stopping or now >= judge_by):
                batch.lines += self._detect(batch.readings, registry)
                batch.readings = []  # judged: only lines and messages wait for storage
                judge_by = math.inf
            if batch.messages and (due or stopping):
                ready.append(batch)
                batch = Batch()
            while ready and not self._queue.full() and not self._side_puts:
                self._queue.put_nowait(ready.popleft())
            # a few dozen batches at most while storage is behind: counted when needed
            if ready and (stopping or sum(len(b.messages) for b in ready) >= hold_at_most):
                await self._queue.put(ready.popleft())
                continue
            if stopping and not self.source.backlog:
                await self._queue.put(None)
                return
            await asyncio.sleep(0)  # let the receiver, writer and dispatcher have their turn

    async def _put_aside(self, batch: Batch) -> None:
        """Queue a batch from outside the decode task (detections of silence, alert
        events, operator alerts), ahead of the decode task's own when storage is behind."""
        self._side_puts += 1
        try:
            await self._queue.put(batch)
        finally:
            self._side_puts -= 1

    def _decode_one(self, message: Inbound, batch: Batch, registry: Registry) -> None:
        topic = message.topic
        if topic.startswith(OWN_TOPICS):
            return  # our own namespace (rejections, collector status): never device input
        if topic.startswith(UNIT_TOPIC_ROOT) and (unit_topic := parse_unit_topic(topic)):
            unit, kind = unit_topic
            if kind == "ack" and message.retained:
                # The broker's copy, replayed to every new subscription: an acknowledgement
                # is an act, once; replayed, it would silence an alert that came back.
                self._refuse_retained(message)
            elif kind == "ack":
                self._field_ack(unit, message)
            elif self.alerts is not None:  # without alerts there is no state to keep
                self.unit_states.observe(topic, message.payload)
            return  # any other topic under units/ is decoded below, and refused as such
        is_status = topic.endswith("/status")
        if message.retained and not is_status:
            # A status is retained by design and still news; a reading would happen again.
            self._refuse_retained(message)
            return
        if self.rate_limit is not None:  # status messages too: one bucket per device
            device = self.fast_decoder.device(topic, registry)
            if not self.rate_limit.allow(device, message.received_ms / 1000):
                if self._rate_watch is not None:
                    self._rate_watch.refused(device)
                self._reject(
                    Rejection("rate_limited", "too many messages", "_", device),
                    message,
                    quarantine=False,
                )
                return
        if is_status:
            parsed = parse_topic(topic)
            if isinstance(parsed, Rejection):
                self._reject(parsed, message)
                return
            self._decode_status(parsed, message, batch, registry)
            return
        result = self.fast_decoder.decode(topic, message.payload, message.received_ms, registry)
        if isinstance(result, Rejection):
            self._reject(result, message)
            return
        for rejection in result.rejections:
            self._reject(rejection, message)
        if result.rejections:
            batch.lines += self._record(self._cap_alerts(), registry)
        readings = result.readings
        if readings:
            batch.lines += result.lines
            batch.readings += readings
            batch.reading_count += len(readings)
            self.stats.readings_accepted += len(readings)
            newest = readings[0].ts_ms if len(readings) == 1 else max(r.ts_ms for r in readings)
            self._arrival_ages.add((message.received_ms - newest) / 1000)

    def _cap_alerts(self) -> list[DetectionEvent]:
        now_ms = time.time_ns() // 1_000_000
        return [
            cap_alert(
                over,
                collector=self.settings.mqtt.client_id,
                limit=self.admission.max_series
                if over.reason == "too_many_series"
                else self.admission.max_per_device,
                now_ms=now_ms,
            )
            for over in self.admission.take_over_cap()
        ]

    def _decode_status(
        self, topic: Topic, message: Inbound, batch: Batch, registry: Registry
    ) -> None:
        if not message.payload:
            return  # a cleared retained status: nothing to record
        status = self.decoder.decode_status(topic, message.payload, message.received_ms)
        if isinstance(status, Rejection):
            self._reject(status, message)
            return
        online, ts_ms = status
        batch.lines.append(status_line(topic.device, online, ts_ms, registry))

    def _refuse_retained(self, message: Inbound) -> None:
        if not message.topic.startswith(UNIT_TOPIC_ROOT):
            self._reject(retained_rejection(message.topic, message.payload), message)
            return
        self.stats.rejections["retained"] += 1
        self._rejection_log.warning(
            "field_ack",
            "on-site acknowledgement refused",
            topic=message.topic[:200],
            error="a retained copy the broker replays; acknowledge with retain off",
        )

    def _reject(self, rejection: Rejection, message: Inbound, *, quarantine: bool = True) -> None:
        self.stats.rejections[rejection.reason] += 1
        self._rejection_log.warning(
            rejection.reason,
            "message rejected",
            reason=rejection.reason,
            detail=rejection.detail,
            topic=message.topic[:200],
        )
        if not (quarantine and self.settings.ingest.publish_rejections):
            return
        family = topic_level(rejection.family)
        device = topic_level(rejection.device)
        self.source.publish(
            f"{REJECTED_ROOT}/{family}/{device}",
            rejection.to_json(message.topic, message.received_ms),
            qos=1,
        )

    # -- detect ----------------------------------------------------------------------------

    def _detect(self, readings: list[Reading], registry: Registry) -> list[str]:
        """Judge readings; the lines recording what the detectors decided."""
        if self.engine is None or not readings:
            return []
        try:
            events = self.engine.process(readings, registry)
        except Exception:  # a detection bug must never cost a stored reading
            self.stats.detection_errors += 1
            log.exception("detection failed for a batch; its readings are stored regardless")
            return []
        return self._record(events, registry)

    def _record(self, events: list[DetectionEvent], registry: Registry) -> list[str]:
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
            if self._pending is not None:
                try:
                    # stored now, or kept and retried until the store takes it
                    self._pending.submit(event, _hierarchy_of(event.unit, registry))
                except Exception:  # a bug in the alert book must never stop ingest
                    self.stats.alert_errors += 1
                    log.exception(
                        "could not apply a detection to the alerts",
                        extra={"device": event.device, "detector": event.detector},
                    )
        return lines

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
        if self.dispatcher is not None:
            self.dispatcher.wake()

    def _downlink(self, alert: Alert, events: Sequence[AlertEvent]) -> None:
        """The unit's worst active colour, retained for on-site displays and sirens."""
        alerts = self.alerts
        assert alerts is not None
        states = sorted(ACTIVE_STATES)
        self.unit_states.publish(
            unit_state_topic(alert.unit),
            lambda: unit_state_body(
                alert.unit, alerts.find(states=states, unit=alert.unit)
            ),
        )

    def _unit_state_bodies(self) -> dict[str, bytes]:
        """Every unit's retained state as the alert store has it now."""
        assert self.alerts is not None
        by_unit: dict[str, list[Alert]] = {}
        for alert in self.alerts.find(states=sorted(ACTIVE_STATES)):
            by_unit.setdefault(alert.unit, []).append(alert)
        return {unit_state_topic(u): unit_state_body(u, a) for u, a in by_unit.items()}

    async def _unit_state_loop(self) -> None:
        """Overwritten unit states get the collector's again, once per interval at most."""
        while True:
            await asyncio.sleep(RESTORE_INTERVAL_S)
            self.unit_states.restore()

    def _field_ack(self, unit: str, message: Inbound) -> None:
        """An on-site acknowledgement: ``{"alert_id": 42, "actor": "guard-3", "note": ...}``.

        The broker let only the unit's own principal publish here; the unit in the topic
        must still be a real one and the alert that unit's."""
        try:
            if self.alerts is None:
                raise ValueError("alerts are disabled")
            if is_pseudo_unit(unit):
                raise ValueError(f"{unit!r} is a pseudo-unit: its alerts have no on-site panel")
            alert_id, actor, note = parse_ack(message.payload)
            alert = self.alerts.get(alert_id)
            if alert is None or alert.unit != unit:
                raise ValueError(f"no alert {alert_id} in unit {unit!r}")
            self.alerts.acknowledge(
                alert_id,
                actor=f"field:{unit}:{actor}",
                note=note,
                now_ms=time.time_ns() // 1_000_000,
            )
        except ValueError as exc:  # the alert book's TransitionError too
            preview = message.payload[:512].decode("utf-8", errors="replace")
            rejection = Rejection("ack_refused", str(exc)[:200], "units", unit, payload=preview)
            self._reject(rejection, message)

    async def _silence_loop(self) -> None:
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
                lines = self._record(events[start : start + EVENTS_PER_TURN], registry)
                await self._put_aside(Batch(lines=lines))
                await asyncio.sleep(0)

    async def _verify_loop(self) -> None:
        """Verify resolved alerts, and store every alert event as an annotation."""
        if self.alerts is None:
            return
        engine = self.engine
        interval = self.settings.alerts.verify_interval_s
        last_verify = 0.0
        while True:
            await asyncio.sleep(min(interval, ANNOTATION_FLUSH_S))
            now = time.time()
            if now - last_verify >= interval:
                last_verify = now

                def alive(device: str, now: float = now) -> bool:
                    return engine is not None and engine.device_alive(device, now)

                try:
                    # The book is thread-safe (the API uses it from threads too); off the
                    # event loop, a scan of every open alert never delays a live one.
                    await asyncio.to_thread(self._verify_and_escalate, round(now * 1000), alive)
                except Exception:  # keep verifying: the next tick may succeed
                    self.stats.alert_errors += 1
                    log.exception("alert verification failed")
            if self._annotations:
                lines = [self._annotations.popleft() for _ in range(len(self._annotations))]
                await self._put_aside(Batch(lines=lines))

    async def _alert_retry_loop(self) -> None:
        """Store the detections the alert store refused, in order, a slice per turn."""
        pending = self._pending
        if pending is None:
            return
        while True:
            await asyncio.sleep(ALERT_RETRY_TICK_S)
            while pending.due() and pending.retry(EVENTS_PER_TURN):
                await asyncio.sleep(0)

    def _verify_and_escalate(self, now_ms: int, alive: Callable[[str], bool]) -> None:
        assert self.alerts is not None
        self.alerts.verify(now_ms, alive)
        self.alerts.escalate(now_ms, self.settings.alerts.ack_deadlines_s)

    # -- write -----------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        """Hand batches off, up to ``ingest.write_concurrency`` at once; ack in order."""
        abandoned = 0
        in_flight: collections.deque[tuple[Batch, asyncio.Task[bool]]] = collections.deque()
        limit = self.settings.ingest.write_concurrency
        closing = False
        while True:
            # Acknowledge in arrival order whatever is done; when closing or full, wait for it.
            while in_flight and (closing or len(in_flight) >= limit or in_flight[0][1].done()):
                done, task = in_flight.popleft()
                if not await task:
                    abandoned += 1
                    continue  # not acknowledged: the broker keeps these messages for us
                self.source.ack(done.messages)
                self.stats.readings_stored += done.reading_count
            if closing:
                if abandoned:
                    log.warning(
                        "stopped with batches InfluxDB did not take; their messages "
                        "stay with the broker and come again at the next start",
                        extra={"batches": abandoned},
                    )
                return
            if not in_flight:
                batch = await self._queue.get()
            else:  # the next batch, or the oldest hand-off finishing, whichever comes first
                getter = asyncio.ensure_future(self._queue.get())
                oldest = in_flight[0][1]
                await asyncio.wait((getter, oldest), return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()  # nothing taken: the queue keeps its batch
                    continue
                batch = getter.result()
            if batch is None:
                closing = True
            else:
                in_flight.append((batch, asyncio.create_task(self._hand_off(batch.lines))))

    async def _hand_off(self, lines: list[str]) -> bool:
        """Store durably: InfluxDB, or the spool while InfluxDB is down, slow or behind.

        False only when stopping and neither took the lines in time.
        """
        if not lines:
            return True
        spool = self.spool
        if spool is None:
            return await self._write_with_retry(lines)
        if not spool:  # an empty spool: nothing older waits, so write directly
            try:
                patience = self.settings.ingest.spool_after_s
                if self._stopping.is_set():
                    patience = min(patience, 1.0)  # stopping: spool rather than wait
                await asyncio.wait_for(self._write_once(lines), patience)
                return True
            except (RetryableStoreError, TimeoutError) as exc:
                self.stats.write_retries += 1
                log.warning("InfluxDB did not take a batch; spooling", extra={"error": str(exc)})
        try:
            spool.append(lines)
        except SpoolError as exc:  # full, or its disk is: nothing of the batch was stored
            log.error("%s", exc)
            # Backpressure up to the broker until InfluxDB or the spool (once it has room
            # again) takes the batch: the messages behind it are acknowledged in order.
            return await self._write_with_retry(lines, fallback=self._spool_if_room)
        self._spooled.set()
        return True

    def _spool_if_room(self, lines: list[str]) -> bool:
        assert self.spool is not None
        try:
            self.spool.append(lines)
        except SpoolError:
            return False  # still full: said once already, and the operator alert stands
        self._spooled.set()
        return True

    async def _replay_loop(self) -> None:
        """Empty the spool into InfluxDB, oldest batch first, whenever it has something."""
        spool = self.spool
        assert spool is not None
        while True:
            try:
                lines = spool.peek()
                if lines is None:
                    self._spooled.clear()
                    await self._spooled.wait()
                    continue
                if await self._write_with_retry(lines, forever=True):
                    spool.pop()  # a crash before this replays the batch again: it collapses
                    self.stats.spool_replayed += 1
            except OSError as exc:  # the spool's disk failed a read: try again, never give up
                log.error("cannot read the spool: %s", exc)
                await asyncio.sleep(self.settings.ingest.retry_max_s)

    async def _write_once(self, lines: list[str]) -> None:
        started = time.perf_counter()
        result = await self.influx.write_lines(lines)
        self.stats.write_requests += result.requests
        self.stats.lines_written += result.written
        self.stats.lines_dropped.update(result.dropped)
        self.stats.batches_written += 1
        took_ms = (time.perf_counter() - started) * 1000
        mean = self.stats.write_latency_ms
        self.stats.write_latency_ms = took_ms if not mean else mean + 0.1 * (took_ms - mean)

    async def _write_with_retry(
        self,
        lines: list[str],
        *,
        forever: bool = False,
        fallback: Callable[[list[str]], bool] | None = None,
    ) -> bool:
        """Write until it works, or ``fallback`` (tried after each failed write) takes the
        lines; False only when stopping and the flush deadline passed."""
        ingest = self.settings.ingest
        attempt = 0
        while True:
            if not forever and self._stopping.is_set() and time.monotonic() > self._flush_deadline:
                return False
            try:
                await self._write_once(lines)
                return True
            except RetryableStoreError as exc:
                attempt += 1
                self.stats.write_retries += 1
                delay = min(ingest.retry_initial_s * 2 ** (attempt - 1), ingest.retry_max_s)
                delay *= random.uniform(0.8, 1.2)
                if exc.retry_after_s is not None:
                    delay = max(delay, min(exc.retry_after_s, ingest.retry_max_s * 4))
                log.warning(
                    "InfluxDB write failed; will retry",
                    extra={"error": str(exc), "lines": len(lines), "retry_in_s": round(delay, 2)},
                )
                if fallback is not None and fallback(lines):
                    return True
                if not forever and self._stopping.is_set():
                    delay = min(delay, max(self._flush_deadline - time.monotonic(), 0.0) + 0.01)
                await asyncio.sleep(delay)

    # -- stats -----------------------------------------------------------------------------

    async def _save_detector_state(self) -> None:
        """Copied on the event loop (~10 ms at 26,000 series), compressed and synced in a
        worker thread: ~270 ms that every alert in flight used to wait through."""
        if self.engine is None:
            return
        if self._state_saving is not None:  # one file, one writer, the newest state last
            await asyncio.gather(self._state_saving, return_exceptions=True)
        arrays = self.engine.snapshot()
        self._state_saving = asyncio.ensure_future(
            asyncio.to_thread(DetectionEngine.write_state, self.state_path, arrays)
        )
        try:
            await asyncio.shield(self._state_saving)  # a stop cancels the stats loop, not this
        except OSError as exc:
            log.error("could not save detector state to %s: %s", self.state_path, exc)

    def _freeze_long_lived(self) -> None:
        """Keep what lives as long as the process out of the garbage collector's scans.

        A full collection walks every tracked object: with a 10,000-device registry that
        took ~100 ms, a pause every alert in flight waited through (bench/ingest.py's
        latency tail). The registry, settings and modules are done with once loaded;
        frozen, they are never scanned. Plain refcounting still frees them when replaced.
        """
        gc.collect()
        gc.freeze()
        self._frozen_registry = self.registry.current

    async def _stats_loop(self) -> None:
        last_save = time.monotonic()
        while True:
            await asyncio.sleep(self.settings.ingest.stats_interval_s)
            if self.registry.current is not self._frozen_registry:
                self._freeze_long_lived()  # a reloaded registry is as long-lived
            if time.monotonic() - last_save >= DETECTOR_STATE_SAVE_S:
                await self._save_detector_state()
                last_save = time.monotonic()
            if self.alerts is not None:
                self.stats.outbox = self.alerts.outbox_counts()
            operator = self._operator_checks()
            if operator:
                registry = self.registry.current
                await self._put_aside(Batch(lines=self._record(operator, registry)))
            log.info(
                "ingest stats",
                extra={
                    **self.stats.as_dict(),
                    "inbox": self.source.backlog,
                    "write_queue": self._queue.qsize(),
                },
            )
            with contextlib.suppress(RetryableStoreError):
                await self._write_stats()

    def _operator_checks(self) -> list[DetectionEvent]:
        """Measure how late readings arrive, how full the spool is, which devices the rate
        limit refuses and which webhook receivers fail; alert on each."""
        age = self._arrival_ages.take()
        if age is not None:
            self.stats.arrival_age_s = age
        now_ms = time.time_ns() // 1_000_000
        events = []
        if self._behind is not None:
            events += self._behind.update(0.0 if age is None else age, now_ms)
        if self._spool_watch is not None:
            events += self._spool_watch.check(now_ms)
        if self._pending is not None:
            events += self._store_alarm.update(self._pending.take_peak(), now_ms)
        if self._rate_watch is not None:
            events += self._rate_watch.update(now_ms)
        if self.dispatcher is not None:
            events += self.dispatcher.watch.update(now_ms)
        return events

    async def _write_stats(self) -> None:
        # Built in a worker thread: a snapshot of every unit and open alert is ~100 ms of
        # Python at city scale, which alerts in flight must not wait through.
        lines = await asyncio.to_thread(self._stats_lines, time.time_ns() // 1_000_000)
        with contextlib.suppress(RetryableStoreError):
            await self.influx.write_lines(lines)

    def _stats_lines(self, now_ms: int) -> list[str]:
        tags = {"collector": self.settings.mqtt.client_id}
        s = self.stats
        lines = [
            encode_line(
                STATS_MEASUREMENT,
                tags,
                {
                    "messages_received": s.messages_received,
                    "readings_accepted": s.readings_accepted,
                    "lines_written": s.lines_written,
                    "rejected": s.rejected,
                    "write_retries": s.write_retries,
                    "lines_dropped": sum(s.lines_dropped.values()),
                    "inbox": self.source.backlog,
                    "write_queue": self._queue.qsize(),
                    "write_latency_ms": round(s.write_latency_ms, 2),
                    "arrival_age_s": round(s.arrival_age_s, 3),
                    "spool_bytes": self.spool.pending_bytes if self.spool else 0,
                    "spool_replayed": s.spool_replayed,
                    "spool_corrupt_records": (
                        self.spool.corrupt_records if self.spool is not None else 0
                    ),
                    "outbox_pending": s.outbox.get("pending", 0),
                    "outbox_dead": s.outbox.get("dead", 0),
                },
                now_ms,
            )
        ]
        if self.alerts is not None:
            lines += unit_status_lines(
                self.registry.current,
                self.alerts.find(states=sorted(ACTIVE_STATES)),
                now_ms,
                self.settings.alerts.ack_deadlines_s,
            )
        lines += [
            encode_line(REJECTIONS_MEASUREMENT, {**tags, "reason": reason}, {"count": n}, now_ms)
            for reason, n in list(s.rejections.items())  # one step: decoding may add a reason
        ]
        return lines


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
        tags = encode_tags({"device": event.device, **extra})
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


def _hierarchy_of(unit: str, registry: Registry) -> dict[str, str]:
    found = registry.units.get(unit)
    return found.hierarchy.as_tags() if found is not None else {}


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


async def _serve(api: uvicorn.Server) -> None:
    # uvicorn exits the process when it cannot bind its port; the API failing must not
    # stop ingest, so that becomes an error in the log.
    try:
        await api.serve()
    except (SystemExit, OSError) as exc:
        log.error("HTTP API not available: %s (port %s)", exc, api.config.port)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside the collector's loop: signals stay the collector's (it flushes first)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def collector_status_topic(client_id: str) -> str:
    """Retained ``{"state": "online"|"offline"}`` of a collector, online once subscribed."""
    return f"{TOPIC_ROOT}/_collector/{topic_level(client_id)}/status"
