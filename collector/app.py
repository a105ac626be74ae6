r"""The composition root: builds the collector's parts, wires them, starts and stops them.

  source -> ingest -> detection -> storage writer -> InfluxDB | spool, then PUBACK
                          \-> alerts -> (subscribers) annotations, downlink, webhooks

- source (``collector.source``): the MQTT receiver, a bounded inbox acknowledged in order.
- ingest (``collector.ingest``): route, rate limit, quarantine, decode, judge, batch.
- detection (``collector.detecting``): the engine, its saved state, its warm start.
- storage writer (``collector.storage``): write queue, hand-off, spool and its replay, the
  ordered acknowledgement.
- alerts (``collector.alerting``): the alert book, its subscribers and clocks, dispatch.
- telemetry (``collector.telemetry``): counters, /metrics, operator alerts, stats points.
- API (``collector.apiserver``): uvicorn on the same loop, when ``http.enabled``.

Stopping flushes: the pipeline drains what was received, the writer stores it (or gives
up after ``ingest.shutdown_flush_s``, leaving the messages unacknowledged with the
broker), then the side tasks stop and the detectors' state is saved.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any

from collector.alerting import AlertWiring
from collector.alerts.dispatch import Dispatcher
from collector.alerts.lifecycle import AlertBook
from collector.apiserver import build_api_server, serve
from collector.clusterview import ClusterView
from collector.config import Settings
from collector.detecting import DetectionRuntime
from collector.detection import DetectionEngine
from collector.influx import InfluxClient
from collector.ingest import IngestPipeline
from collector.metrics import Value
from collector.registry import RegistryHolder
from collector.source import MessageSource, open_source
from collector.spool import DiskSpool
from collector.stats import IngestStats
from collector.storage import StorageWriter
from collector.telemetry import Telemetry

log = logging.getLogger(__name__)

API_CLOSE_S = 0.2  # for uvicorn to close its sockets before what is left is cancelled


class Collector:
    def __init__(self, settings: Settings, registry: RegistryHolder) -> None:
        self.settings = settings
        self.registry = registry
        ingest = settings.ingest
        self.stats = IngestStats()
        self._stopping = asyncio.Event()
        self.source: MessageSource = open_source(
            settings.mqtt, settings.nats if settings.transport == "nats" else None
        )
        self.influx = InfluxClient(settings.influx)
        self.spool = (
            DiskSpool(settings.data_dir / "spool", max_bytes=ingest.spool_max_bytes)
            if ingest.spool
            else None
        )
        self.writer = StorageWriter(
            ingest,
            influx=self.influx,
            spool=self.spool,
            stats=self.stats,
            acknowledge=self.source.ack,
            stopping=self._stopping,
        )
        self.detection = DetectionRuntime(settings, registry=registry, stats=self.stats)
        checkpoints = None
        if settings.transport == "nats" and self.detection.engine is not None:
            from collector.natscheckpoints import PartitionCheckpoints  # noqa: PLC0415
            from collector.natssource import NatsSource  # noqa: PLC0415

            # each partition's detector state goes with the partition (docs/cluster.md)
            assert isinstance(self.source, NatsSource)
            self.source.checkpoints = checkpoints = PartitionCheckpoints(
                self.detection,
                partitions=settings.nats.partitions,
                interval_s=settings.nats.checkpoint_interval_s,
                replicas=settings.nats.stream_replicas,
                deadline_s=settings.nats.lease_ttl_s / 3,  # a lease round's period
            )
        self.ingest = IngestPipeline(
            settings,
            source=self.source,
            registry=registry,
            detection=self.detection,
            writer=self.writer,
            stats=self.stats,
            stopping=self._stopping,
        )
        self.alerting = (
            AlertWiring(settings, source=self.source, stats=self.stats)
            if settings.alerts.enabled
            else None
        )
        if self.alerting is not None:
            alerting = self.alerting
            self.detection.sink = alerting.submit
            # devices shared out between instances (transport "nats"): verified where read
            alerting.reads_device = getattr(self.source, "reads_device", None)
            self.ingest.field_acks = alerting.field_ack
            self.ingest.unit_states = alerting.unit_states.observe
            self.ingest.urgent = lambda: alerting.dispatcher.urgent
            if self.ingest.rate_watch is not None:
                self.ingest.rate_watch.resume(alerting.active_operator_alerts())
        self.cluster = ClusterView(settings)
        self.cluster.checkpoints = checkpoints
        self.telemetry = Telemetry(
            settings,
            stats=self.stats,
            registry=registry,
            source=self.source,
            ingest=self.ingest,
            detection=self.detection,
            writer=self.writer,
            alerts=self.alerting,
            cluster=self.cluster,
        )

    # -- views for the CLI, the API and tests ---------------------------------------------------

    @property
    def engine(self) -> DetectionEngine | None:
        return self.detection.engine

    @property
    def alerts(self) -> AlertBook | None:
        return self.alerting.book if self.alerting is not None else None

    @property
    def dispatcher(self) -> Dispatcher | None:
        return self.alerting.dispatcher if self.alerting is not None else None

    def metrics(self) -> dict[str, Value]:
        return self.telemetry.metrics()

    def problems(self) -> list[str]:
        return self.alerting.problems() if self.alerting is not None else []

    # -- lifecycle ------------------------------------------------------------------------------

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
        ingest = asyncio.create_task(self.ingest.run(), name="ingest")
        write = asyncio.create_task(self.writer.run(), name="write")
        side = [asyncio.create_task(c, name=n) for n, c in self._side_tasks().items()]
        api = None
        if self.settings.http.enabled and self.alerting is not None:
            api = build_api_server(
                self.settings,
                alerts=self.alerting,
                metrics=self.metrics,
                healthy=self.source.connected.is_set,
                registry=lambda: self.registry.current,
                cluster=self.cluster.answer,
            )
            side.append(asyncio.create_task(serve(api), name="http"))
        stop_wait = asyncio.create_task(stop.wait(), name="stop")
        done, _ = await asyncio.wait(
            [stop_wait, ingest, write], return_when=asyncio.FIRST_COMPLETED
        )
        for task in done:
            if task is not stop_wait and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        log.info("stopping: flushing what was received")
        self.writer.flush_deadline = time.monotonic() + self.settings.ingest.shutdown_flush_s
        self._stopping.set()
        self.source.wake()
        await asyncio.gather(ingest, write)
        if api is not None:
            api.should_exit = True
            await asyncio.sleep(API_CLOSE_S)
        for task in side:
            task.cancel()
        stop_wait.cancel()
        await asyncio.gather(*side, stop_wait, return_exceptions=True)
        await self.telemetry.write_stats()
        await self.detection.save_state()
        await self.source.aclose()
        await self._close()
        log.info("stopped", extra=self.stats.as_dict())

    def _side_tasks(self) -> dict[str, Coroutine[Any, Any, None]]:
        """The tasks besides ingest and storage, by name; cancelled once those have flushed."""
        tasks: dict[str, Coroutine[Any, Any, None]] = {
            "registry": self.registry.watch(self.settings.registry.reload_interval_s),
            "stats": self.telemetry.run(),
            "detector-state": self.detection.keep_state(),
            "silence": self.detection.watch_silence(self.writer.put_aside),
            "replay": self.writer.replay(),
            "cluster-view": self.cluster.run(),
        }
        alerting = self.alerting
        if alerting is not None:
            tasks |= {
                "verify": alerting.verify(self.detection.device_alive, self.writer.put_aside),
                "unit-states": alerting.restore_unit_states(),
                "alert-retry": alerting.retry_refused(),
                "dispatch": alerting.dispatcher.run(),
            }
        return tasks

    async def _start_up(self) -> None:
        # Best effort: InfluxDB may be down now, and the spool covers that; a write that
        # finds the database missing later creates it (InfluxClient).
        await self.influx.ensure_database()
        await self.detection.warm_start(self.influx, self.ingest.admission)
        self.telemetry.freeze_long_lived()

    async def _close(self) -> None:
        if self.alerting is not None:
            await self.alerting.aclose()
        await self.influx.aclose()
