"""Stats and metrics: what the collector says about itself.

Every ``ingest.stats_interval_s``: the operator checks (arrival age, spool, rate limit,
alerting) raise or clear the collector's own alerts, a log line and the
``smartunit_ingest`` / ``smartunit_rejections`` / ``unit_status`` points are written.

``smartunit_rejections`` holds increments, not running totals: each point's ``rejected``
is what one collector refused for one reason since its last point was written, so a panel
sums them over any interval. A running total graphed as a difference loses the first
rejections of every reason after a restart (its series starts at a value with nothing
before it, or below the total before the restart); sums are right across restarts, any
number of collectors, and intervals InfluxDB was down (the increment waits until it is
written).
``metrics`` is what /metrics exposes, read at the moment it is asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from collector.alerting import AlertWiring
from collector.alerts.model import ACTIVE_STATES
from collector.clusterview import ClusterView
from collector.config import Settings
from collector.detecting import DetectionRuntime
from collector.detection import DetectionEvent
from collector.errors import RetryableStoreError
from collector.ingest import IngestPipeline
from collector.lineprotocol import encode_line
from collector.metrics import Value
from collector.operator import OperatorAlarm, SpoolWatch
from collector.registry import Registry, RegistryHolder
from collector.snapshots import unit_status_lines
from collector.source import MessageSource
from collector.stats import IngestStats
from collector.storage import Batch, StorageWriter

log = logging.getLogger(__name__)

STATS_MEASUREMENT = "smartunit_ingest"
REJECTIONS_MEASUREMENT = "smartunit_rejections"
BEHIND_DETECTOR = "collector-behind"
YOUNG_COLLECTION_ALLOCATIONS = 50_000


class Telemetry:
    def __init__(
        self,
        settings: Settings,
        *,
        stats: IngestStats,
        registry: RegistryHolder,
        source: MessageSource,
        ingest: IngestPipeline,
        detection: DetectionRuntime,
        writer: StorageWriter,
        alerts: AlertWiring | None,
        cluster: ClusterView | None = None,
    ) -> None:
        self.settings = settings
        self.stats = stats
        self.registry = registry
        self.source = source
        self.ingest = ingest
        self.detection = detection
        self.writer = writer
        self.alerts = alerts
        self.cluster = cluster
        collector_id = settings.mqtt.client_id
        behind_s = settings.ingest.behind_alert_s
        self._behind = (
            OperatorAlarm(
                detector=BEHIND_DETECTOR,
                quantity="arrival_age_s",
                limit=behind_s,
                collector=collector_id,
                intervals=2,
            )
            if behind_s > 0
            else None
        )
        spool = writer.spool
        self.spool_watch = SpoolWatch(spool, collector=collector_id) if spool is not None else None
        self._frozen_registry: Registry | None = None
        # The rejections the points in InfluxDB account for; the next point adds the rest.
        self._rejections_written: Counter[str] = Counter()

    def freeze_long_lived(self) -> None:
        """Keep what lives as long as the process out of the garbage collector's scans.

        A full collection walks every tracked object: with a 10,000-device registry that
        took ~100 ms, a pause every alert in flight waited through (bench/ingest.py's
        latency tail). The registry, settings and modules are done with once loaded;
        frozen, they are never scanned. Plain refcounting still frees them when replaced.
        """
        gc.collect()
        gc.freeze()
        self._frozen_registry = self.registry.current
        # Young collections every YOUNG_COLLECTION_ALLOCATIONS, not CPython's 700: each
        # message allocates a dozen containers, most freed by refcounting within the turn,
        # and the default ran a young collection every ~60 messages and a full one (10-70
        # ms, scanning the tens of thousands of messages in flight) every second or two
        # under load: 15 % of the collector's CPU per message (bench/collector_cpu.py).
        # Cycles (asyncio's futures, exceptions) are still collected, in fewer passes.
        gc.set_threshold(YOUNG_COLLECTION_ALLOCATIONS, 20, 10)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.ingest.stats_interval_s)
            if self.registry.current is not self._frozen_registry:
                self.freeze_long_lived()  # a reloaded registry is as long-lived
            if self.alerts is not None:
                self.stats.outbox = self.alerts.book.outbox_counts()
            operator = self._operator_checks()
            if operator:
                lines = self.detection.record(operator, self.registry.current)
                await self.writer.put_aside(Batch(lines=lines))
            log.info(
                "ingest stats",
                extra={
                    **self.stats.as_dict(),
                    "inbox": self.source.backlog,
                    "write_queue": self.writer.queue.qsize(),
                },
            )
            with contextlib.suppress(RetryableStoreError):
                await self.write_stats()

    def _operator_checks(self) -> list[DetectionEvent]:
        """Measure how late readings arrive, how full the spool is, which devices the rate
        limit refuses and which webhook receivers fail; alert on each."""
        age = self.ingest.arrival_ages.take()
        if age is not None:
            self.stats.arrival_age_s = age
        now_ms = time.time_ns() // 1_000_000
        events = []
        if self._behind is not None:
            events += self._behind.update(0.0 if age is None else age, now_ms)
        if self.spool_watch is not None:
            events += self.spool_watch.check(now_ms)
        if self.alerts is not None:
            events += self.alerts.operator_checks(now_ms)
        if self.ingest.rate_watch is not None:
            events += self.ingest.rate_watch.update(now_ms)
        if self.cluster is not None:
            events += self.cluster.operator_checks(now_ms)
        return events

    async def write_stats(self) -> None:
        # Built in a worker thread: a snapshot of every unit and open alert is ~100 ms of
        # Python at city scale, which alerts in flight must not wait through.
        now_ms = time.time_ns() // 1_000_000
        lines = await asyncio.to_thread(self._stats_lines, now_ms)
        with contextlib.suppress(RetryableStoreError):
            await self.writer.influx.write_lines(lines)
        await self._write_rejections(now_ms)

    async def _write_rejections(self, now_ms: int) -> None:
        """One point per reason refused since the last point written for it.

        Its own request (under 30 lines, never split): either it is stored and the
        increments are accounted for, or it is not and they go into the next point.
        """
        counted = Counter(dict(self.stats.rejections))  # one step: decoding may add a reason
        increments = counted - self._rejections_written
        if not increments:
            return
        tags = {"collector": self.settings.mqtt.client_id}
        lines = [
            encode_line(REJECTIONS_MEASUREMENT, {**tags, "reason": reason}, {"rejected": n}, now_ms)
            for reason, n in sorted(increments.items())
        ]
        with contextlib.suppress(RetryableStoreError):
            await self.writer.influx.write_lines(lines)
            self._rejections_written = counted

    def _stats_lines(self, now_ms: int) -> list[str]:
        tags = {"collector": self.settings.mqtt.client_id}
        s = self.stats
        spool = self.writer.spool
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
                    "write_queue": self.writer.queue.qsize(),
                    "write_latency_ms": round(s.write_latency_ms, 2),
                    "arrival_age_s": round(s.arrival_age_s, 3),
                    "spool_bytes": spool.pending_bytes if spool is not None else 0,
                    "spool_replayed": s.spool_replayed,
                    "spool_corrupt_records": spool.corrupt_records if spool is not None else 0,
                    "outbox_pending": s.outbox.get("pending", 0),
                    "outbox_dead": s.outbox.get("dead", 0),
                },
                now_ms,
            )
        ]
        if self.alerts is not None:
            lines += unit_status_lines(
                self.registry.current,
                self.alerts.book.find(states=sorted(ACTIVE_STATES)),
                now_ms,
                self.settings.alerts.ack_deadlines_s,
            )
        return lines

    def metrics(self) -> dict[str, Value]:
        """What /metrics exposes, read now; each name is declared in collector.metrics."""
        s = self.stats
        spool = self.writer.spool
        engine = self.detection.engine
        rate_watch = self.ingest.rate_watch
        alerts = self.alerts
        out: dict[str, Value] = {
            "messages_received_total": s.messages_received,
            "readings_accepted_total": s.readings_accepted,
            "readings_stored_total": s.readings_stored,
            "lines_written_total": s.lines_written,
            "write_retries_total": s.write_retries,
            "detection_errors_total": s.detection_errors,
            "alert_errors_total": s.alert_errors,
            "inbox_messages": self.source.backlog,
            "late_readings_total": engine.late_readings if engine else 0,
            "judged_readings_total": engine.judged_readings if engine else 0,
            "clock_steps_back_total": engine.clock_steps_back.total() if engine else 0,
            "detector_series": engine.series_count if engine else 0,
            "write_queue_batches": self.writer.queue.qsize(),
            "arrival_age_seconds": s.arrival_age_s,
            "spool_bytes": spool.pending_bytes if spool else 0,
            "spool_fill_ratio": spool.fill_ratio if spool else 0.0,
            "spool_corrupt_records_total": spool.corrupt_records if spool is not None else 0,
            "spool_corrupt_bytes_total": spool.corrupt_bytes if spool is not None else 0,
            "spool_disk_full": int(self.spool_watch.disk_full.raised) if self.spool_watch else 0,
            "write_latency_seconds": s.write_latency_ms / 1000,
            "unit_state_overwrites_total": alerts.unit_states.overwrites if alerts else 0,
            "rate_limited_devices": rate_watch.devices if rate_watch else 0,
        }
        if self.cluster is not None:
            out |= self.cluster.metrics()
        # dict() copies in one step: the event loop may count a new key meanwhile
        out["rejections_total"] = dict(s.rejections)
        out["detections_total"] = dict(s.detections)
        out["alert_events_total"] = dict(s.alert_events)
        if alerts is not None:
            pending = alerts.pending
            out["alert_detections_waiting"] = len(pending)
            out["alert_store_failures_total"] = pending.failures
            out["alert_detections_dropped_total"] = pending.dropped
            out["outbox_entries"] = alerts.book.outbox_counts()
            receivers = alerts.receivers()

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
