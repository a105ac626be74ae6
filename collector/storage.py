"""The storage writer: judged batches in, durable storage out, messages acknowledged in order.

- queue: ``ingest.write_queue_batches`` batches; the ingest pipeline keeps what does not
  fit (see ``collector.ingest``), other parts queue ahead of it (``put_aside``).
- hand-off: up to ``ingest.write_concurrency`` batches in flight. A batch InfluxDB does
  not take within ``ingest.spool_after_s`` goes to the disk spool (bounded; when full, it
  is retried with capped exponential backoff, forever, and its messages stay
  unacknowledged, so nothing is lost even if the collector is killed meanwhile). Lines
  InfluxDB refuses outright (400 after bisection, 413 for a single line) are dropped,
  logged and counted.
- acknowledgement: in arrival order, after the batch holding the readings is stored, so a
  crash costs at most a redelivery; the duplicates collapse in InfluxDB (same device,
  same device time -> same point).
- replay: the spool is emptied into InfluxDB, oldest batch first, whenever it has any.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from collector.backoff import Backoff
from collector.config import IngestSettings
from collector.errors import RetryableStoreError, SpoolError
from collector.influx import InfluxClient
from collector.mqtt import Inbound
from collector.protocol import Reading
from collector.spool import DiskSpool
from collector.stats import IngestStats

log = logging.getLogger(__name__)


@dataclass
class Batch:
    lines: list[str] = field(default_factory=list)
    messages: list[Inbound] = field(default_factory=list)
    readings: list[Reading] = field(default_factory=list)  # not judged yet
    reading_count: int = 0  # judged or not: what storing the batch stores
    started: float = field(default_factory=time.monotonic)


class StorageWriter:
    def __init__(
        self,
        settings: IngestSettings,
        *,
        influx: InfluxClient,
        spool: DiskSpool | None,
        stats: IngestStats,
        acknowledge: Callable[[Sequence[Inbound]], object],
        stopping: asyncio.Event,
    ) -> None:
        self.settings = settings
        self.influx = influx
        self.spool = spool
        self.stats = stats
        self._acknowledge = acknowledge
        self._stopping = stopping
        self.flush_deadline = math.inf  # set when stopping: hand-offs give up after it
        self.queue: asyncio.Queue[Batch | None] = asyncio.Queue(settings.write_queue_batches)
        self._side_puts = 0  # batches of other parts waiting for room: they go first
        self._spooled = asyncio.Event()
        self._backoff = Backoff(
            initial_s=settings.retry_initial_s,
            max_s=settings.retry_max_s,
            retry_after_max_s=settings.retry_max_s * 4,
        )

    @property
    def side_puts_waiting(self) -> bool:
        """Batches of other parts wait for room: the ingest pipeline lets them go first."""
        return self._side_puts > 0

    async def put_aside(self, batch: Batch) -> None:
        """Queue a batch from outside the ingest pipeline (detections of silence, alert
        events, operator alerts), ahead of the pipeline's own when storage is behind."""
        self._side_puts += 1
        try:
            await self.queue.put(batch)
        finally:
            self._side_puts -= 1

    async def run(self) -> None:
        """Hand batches off, up to ``ingest.write_concurrency`` at once; ack in order.

        Returns after the ``None`` that closes the queue, once every hand-off finished."""
        abandoned = 0
        in_flight: collections.deque[tuple[Batch, asyncio.Task[bool]]] = collections.deque()
        limit = self.settings.write_concurrency
        closing = False
        while True:
            # Acknowledge in arrival order whatever is done; when closing or full, wait for it.
            while in_flight and (closing or len(in_flight) >= limit or in_flight[0][1].done()):
                done, task = in_flight.popleft()
                if not await task:
                    abandoned += 1
                    continue  # not acknowledged: the broker keeps these messages for us
                self._acknowledge(done.messages)
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
                batch = await self.queue.get()
            else:  # the next batch, or the oldest hand-off finishing, whichever comes first
                getter = asyncio.ensure_future(self.queue.get())
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
                patience = self.settings.spool_after_s
                if self._stopping.is_set():
                    patience = min(patience, 1.0)  # stopping: spool rather than wait
                async with asyncio.timeout(patience):
                    await self._write_once(lines)
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

    async def replay(self) -> None:
        """Empty the spool into InfluxDB, oldest batch first, whenever it has something."""
        spool = self.spool
        if spool is None:
            return
        if spool:
            self._spooled.set()  # left from before a restart: replay it
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
                await asyncio.sleep(self.settings.retry_max_s)

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
        attempt = 0
        while True:
            if not forever and self._stopping.is_set() and time.monotonic() > self.flush_deadline:
                return False
            try:
                await self._write_once(lines)
                return True
            except RetryableStoreError as exc:
                attempt += 1
                self.stats.write_retries += 1
                delay = self._backoff.delay(attempt, retry_after_s=exc.retry_after_s)
                log.warning(
                    "InfluxDB write failed; will retry",
                    extra={"error": str(exc), "lines": len(lines), "retry_in_s": round(delay, 2)},
                )
                if fallback is not None and fallback(lines):
                    return True
                if not forever and self._stopping.is_set():
                    delay = min(delay, max(self.flush_deadline - time.monotonic(), 0.0) + 0.01)
                await asyncio.sleep(delay)
