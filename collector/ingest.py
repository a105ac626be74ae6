r"""The ingest pipeline: route, rate-limit, quarantine, decode, judge, batch.

  source -> [route -> rate limit -> decode -> judge] -> batch -> storage writer
                  \-> field acks, unit states (the alerts)    \-> quarantine (rejections)

- inbox: bounded by MQTT v5 receive-maximum (``mqtt.receive_maximum``): the broker sends
  no more unacknowledged messages than that, and keeps the rest of the backlog itself.
  QoS 0 messages it does not count: the receiver stops reading while the inbox holds
  that many, and the broker queues (QoS 0: drops, past its limits) the rest.
- at most ``MESSAGES_PER_TURN`` messages per turn of the event loop
  (``MESSAGES_PER_URGENT_TURN`` while new alert events are being delivered); the
  detectors judge new readings within ``DETECT_EVERY_S``.
- when the write queue is full, the pipeline goes on decoding and judging (an alert
  never waits for storage) and keeps the judged batches until there is room, up to the
  receive-maximum in messages; then the broker holds further messages (QoS 0 ones, which
  it does not count, make the pipeline wait instead).
- bad input is a rejection: counted by reason, logged (rate-limited) and published under
  ``smartunit/v1/_rejected/`` (quarantine), never an exception.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import Callable

from collector.admission import QuantityAdmission
from collector.config import Settings
from collector.detecting import DetectionRuntime
from collector.detection import DetectionEvent
from collector.fastpath import FastDecoder
from collector.logs import RateLimitedLog
from collector.mqtt import Inbound
from collector.operator import RateLimitWatch, RecentMedian, cap_alert
from collector.protocol import (
    REJECTED_ROOT,
    TOPIC_ROOT,
    Decoder,
    Limits,
    Rejection,
    Topic,
    parse_topic,
    retained_rejection,
    status_line,
    topic_level,
)
from collector.ratelimit import DeviceRateLimit
from collector.registry import Registry, RegistryHolder
from collector.source import MessageSource
from collector.stats import IngestStats
from collector.storage import Batch, StorageWriter
from collector.unitlink import UNIT_TOPIC_ROOT, parse_unit_topic, retained_ack_rejection

log = logging.getLogger(__name__)

# Messages decoded and judged per turn of the event loop (~10 ms of work): what bounds how
# long a webhook, a write or the MQTT reader waits behind a backlog being taken in.
MESSAGES_PER_TURN = 500
MESSAGES_PER_URGENT_TURN = 50  # while new alert events are being delivered
DETECT_EVERY_S = 0.01  # readings wait at most this long for the detectors
OWN_TOPICS = f"{TOPIC_ROOT}/_"  # rejections, collector status: never device input

# An on-site acknowledgement (unit, message): None when taken, else why it was refused.
FieldAckHandler = Callable[[str, Inbound], Rejection | None]
# A unit's retained state as seen on the broker (topic, payload).
UnitStateObserver = Callable[[str, bytes], object]


class IngestPipeline:
    def __init__(
        self,
        settings: Settings,
        *,
        source: MessageSource,
        registry: RegistryHolder,
        detection: DetectionRuntime,
        writer: StorageWriter,
        stats: IngestStats,
        stopping: asyncio.Event,
    ) -> None:
        self.settings = settings
        ingest = settings.ingest
        self.source = source
        self.registry = registry
        self.detection = detection
        self.writer = writer
        self.stats = stats
        self._stopping = stopping
        rules = detection.rules
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
        self.arrival_ages = RecentMedian()  # per message, since the last stats interval
        self.rate_limit = (
            DeviceRateLimit(rate_per_s=ingest.device_rate_per_s, burst=ingest.device_burst)
            if ingest.device_rate_per_s > 0
            else None
        )
        collector_id = settings.mqtt.client_id
        self.rate_watch = RateLimitWatch(collector=collector_id) if self.rate_limit else None
        self._rejection_log = RateLimitedLog(log, settings.logging.rejection_log_interval_s)
        # Wired by the composition root when alerts are on.
        self.field_acks: FieldAckHandler | None = None
        self.unit_states: UnitStateObserver | None = None
        self.urgent: Callable[[], bool] = lambda: False

    async def run(self) -> None:
        """Decode and judge messages as they arrive; hand them to the writer in batches.

        The detectors see new readings within ``DETECT_EVERY_S``, not a whole write batch
        later: an alert waits for its reading to be decoded and judged, never for a batch
        to fill or for ``ingest.flush_interval_ms`` (bench/ingest.py measures that
        latency). Judging at most that often keeps the detectors' fixed cost per call
        (~1 ms) from growing with the number of small chunks a moderate load arrives in.
        Returns once stopping and the inbox is empty, after closing the write queue.
        """
        ingest = self.settings.ingest
        queue = self.writer.queue
        flush_s = ingest.flush_interval_ms / 1000
        batch = Batch()
        judge_by = math.inf  # when the oldest reading not judged yet must be
        # Judged batches the write queue has no room for yet: storage being slow must not
        # stop detection. Their messages are unacknowledged, so the broker sends no more
        # than mqtt.receive_maximum of them; only QoS 0 traffic could pass that, and there
        # the pipeline waits for the writer.
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
            per_turn = MESSAGES_PER_URGENT_TURN if self.urgent() else MESSAGES_PER_TURN
            messages = self.source.drain(min(ingest.batch_size, per_turn))
            now = time.monotonic()
            if messages and not batch.messages:
                batch.started = now
            registry = self.registry.current
            self.stats.messages_received += len(messages)
            self._decode_burst(messages, batch, registry)
            batch.messages.extend(messages)
            if judge_by == math.inf and batch.readings:
                judge_by = now + DETECT_EVERY_S
            due = len(batch.lines) >= ingest.batch_size or (
                batch.messages and now - batch.started >= flush_s
            )
            if batch.readings and (due or stopping or now >= judge_by):
                batch.lines += self.detection.judge(batch.readings, registry)
                batch.readings = []  # judged: only lines and messages wait for storage
                judge_by = math.inf
            if batch.messages and (due or stopping):
                ready.append(batch)
                batch = Batch()
            while ready and not queue.full() and not self.writer.side_puts_waiting:
                queue.put_nowait(ready.popleft())
            # a few dozen batches at most while storage is behind: counted when needed
            if ready and (stopping or sum(len(b.messages) for b in ready) >= hold_at_most):
                await queue.put(ready.popleft())
                continue
            if stopping and not self.source.backlog:
                await queue.put(None)
                return
            await asyncio.sleep(0)  # let the receiver, writer and dispatcher have their turn

    def _decode_burst(self, messages: list[Inbound], batch: Batch, registry: Registry) -> None:
        """Decode a burst: plain readings on routed data topics here, the rest one by one.

        Nearly every message is one well-formed reading on a data topic seen before: it
        takes one route lookup, the rate limit and its family's encoder, and the counters
        are added once per burst. Anything else (statuses, unit topics, retained
        messages, arrays, readings the fast path is not sure of, a new series over a
        cap) goes through ``_decode_one``, which decides the same for these.
        """
        fast = self.fast_decoder
        routes, route_of, plain = fast.routes(registry), fast.route, fast.plain
        allow = self.rate_limit.allow if self.rate_limit is not None else None
        lines, readings, add_age = batch.lines, batch.readings, self.arrival_ages.add
        accepted = 0
        for message in messages:
            topic, payload, _, _, _, received_ms, retained = message
            # a route only for a data topic of a known family: never our own or a unit's
            route = None if retained else routes.get(topic) or route_of(topic, registry)
            if route is None:
                self._decode_one(message, batch, registry)
                continue
            if allow is not None and not allow(route[1], received_ms / 1000):
                self._rate_limited(route[1], message)
                continue
            done = plain(route, payload, received_ms, registry)
            if done is None:
                self._decode_data(message, batch, registry)
                continue
            reading = done[0]
            readings.append(reading)
            lines.append(done[1])
            accepted += 1
            add_age((received_ms - reading.ts_ms) / 1000)
        batch.reading_count += accepted
        self.stats.readings_accepted += accepted

    def _decode_one(self, message: Inbound, batch: Batch, registry: Registry) -> None:
        topic = message.topic
        if topic.startswith(OWN_TOPICS):
            return  # our own namespace (rejections, collector status): never device input
        if topic.startswith(UNIT_TOPIC_ROOT) and (unit_topic := parse_unit_topic(topic)):
            unit, kind = unit_topic
            if kind == "ack" and message.retained:
                self.reject(retained_ack_rejection(unit, message.payload), message)
            elif kind == "ack":
                self._field_ack(unit, message)
            elif self.unit_states is not None:  # without alerts there is no state to keep
                self.unit_states(topic, message.payload)
            return  # any other topic under units/ is decoded below, and refused as such
        is_status = topic.endswith("/status")
        if message.retained and not is_status:
            # A status is retained by design and still news; a reading would happen again.
            self.reject(retained_rejection(topic, message.payload), message)
            return
        if self.rate_limit is not None:  # status messages too: one bucket per device
            device = self.fast_decoder.device(topic, registry)
            if not self.rate_limit.allow(device, message.received_ms / 1000):
                self._rate_limited(device, message)
                return
        if is_status:
            parsed = parse_topic(topic)
            if isinstance(parsed, Rejection):
                self.reject(parsed, message)
                return
            self._decode_status(parsed, message, batch, registry)
            return
        self._decode_data(message, batch, registry)

    def _rate_limited(self, device: str, message: Inbound) -> None:
        if self.rate_watch is not None:
            self.rate_watch.refused(device)
        self.reject(
            Rejection("rate_limited", "too many messages", "_", device), message, quarantine=False
        )

    def _decode_data(self, message: Inbound, batch: Batch, registry: Registry) -> None:
        result = self.fast_decoder.decode(
            message.topic, message.payload, message.received_ms, registry
        )
        if isinstance(result, Rejection):
            self.reject(result, message)
            return
        for rejection in result.rejections:
            self.reject(rejection, message)
        if result.rejections:
            batch.lines += self.detection.record(self._cap_alerts(), registry)
        readings = result.readings
        if readings:
            batch.lines += result.lines
            batch.readings += readings
            batch.reading_count += len(readings)
            self.stats.readings_accepted += len(readings)
            newest = readings[0].ts_ms if len(readings) == 1 else max(r.ts_ms for r in readings)
            self.arrival_ages.add((message.received_ms - newest) / 1000)

    def _field_ack(self, unit: str, message: Inbound) -> None:
        refused: Rejection | None
        if self.field_acks is None:
            preview = message.payload[:512].decode("utf-8", errors="replace")
            refused = Rejection(
                "ack_refused", "alerts are disabled", "units", unit, payload=preview
            )
        else:
            refused = self.field_acks(unit, message)
        if refused is not None:
            self.reject(refused, message)

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
            self.reject(status, message)
            return
        online, ts_ms = status
        batch.lines.append(status_line(topic.device, online, ts_ms, registry))

    def reject(self, rejection: Rejection, message: Inbound, *, quarantine: bool = True) -> None:
        """Count, log and (unless told not to) quarantine a message that is refused."""
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
