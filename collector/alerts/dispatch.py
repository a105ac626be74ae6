"""Delivering the outbox: at least once, in order per alert and receiver, signed.

Each outbox row is one event for one receiver, written in the same transaction as the
alert change that caused it, so nothing decided is ever lost, even if the service is
killed mid-delivery (the row is simply sent again: receivers drop repeats by the
``X-SmartUnit-Event-Id`` idempotency key).

Receivers are independent: each has its own lane (a task, its own connections, at most
``max_in_flight`` requests at once) that takes its own due rows from the outbox, so a
receiver that is down, slow, or answers a byte at a time delays nobody else. The outbox
is each lane's queue: durable, so it holds whatever a receiver has not taken yet; only
the requests in flight are in memory. Each request has a total deadline of the
receiver's ``timeout_s``, from connecting to the answer's last byte.

Answers are classified like the InfluxDB writes: 2xx delivered; timeouts, connection
errors, 408, 429 and 5xx retried with capped exponential backoff, honouring Retry-After;
any other 4xx means the receiver refuses this message for good: it goes to the
dead-letter list (status ``dead``) with an error log for the operator, and the alert's
later events for that receiver go on. An event still not taken ``give_up_after_s`` after
it was written goes there too, at its next failed attempt: the outbox of a receiver that
is gone stays bounded, and the alert's later events get their turn.

Each lane keeps its receiver's health (collector/alerts/health.py): consecutive failures,
since when it has been failing, its last answer. A dead-lettered event and a receiver
failing for ``alert_after_s`` become an operator alert: collector/operator.py
``ReceiverWatch`` reads ``health()`` as data, so delivery knows nothing of detections.
Failures are logged with the receiver's answer, at most once per
``FAILURE_LOG_INTERVAL_S`` per receiver (with a count of those left out).

New rows go out at once: the alert book's listener calls ``wake`` (from any thread) after
each committed change. Each lane also looks every ``interval_s`` for rows whose retry
time has come, and again whenever one of its requests ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from collector.alerts.backends import STORE_ERRORS
from collector.alerts.health import ReceiverHealth
from collector.alerts.lifecycle import AlertBook
from collector.alerts.notify import EVENT_ID_HEADER, SIGNATURE_HEADER, sign
from collector.alerts.outbox import Backlog, OutboxRepository, OutboxRow
from collector.backoff import Backoff
from collector.config import ReceiverSettings
from collector.influx import retry_after_seconds
from collector.logs import RateLimitedLog
from collector.urls import scrub

log = logging.getLogger(__name__)

# A receiver refusing everything fails every request of every alert: its answer is
# logged once at once, then once per interval with how many were left out.
FAILURE_LOG_INTERVAL_S = 60.0


class Dispatcher:
    def __init__(
        self,
        outbox: OutboxRepository,
        receivers: Sequence[ReceiverSettings],
        book: AlertBook,
        *,
        retry_initial_s: float = 1.0,
        retry_max_s: float = 300.0,
    ) -> None:
        self.outbox = outbox
        self.book = book
        self.retry_initial_s, self.retry_max_s = retry_initial_s, retry_max_s
        self.backoff = Backoff(initial_s=retry_initial_s, max_s=retry_max_s)
        self.results: Counter[str] = Counter()
        self.failure_log = RateLimitedLog(log, FAILURE_LOG_INTERVAL_S)
        self.lanes = {r.name: ReceiverLane(self, r) for r in receivers}
        self._loop: asyncio.AbstractEventLoop | None = None

    def health(self) -> list[tuple[ReceiverSettings, ReceiverHealth]]:
        """Each receiver with what its lane saw: the operator watch reads it as data."""
        return [(lane.receiver, lane.health) for lane in self.lanes.values()]

    def status(self, alert_colours: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """Each receiver's health and backlog: the API, /metrics and the console show it.

        ``alert_colours``: the colour of each receiver's open operator alert."""
        alert_colours = alert_colours or {}
        now_ms = round(time.time() * 1000)
        backlogs = self.outbox.backlogs()
        found = []
        for name, lane in self.lanes.items():
            health, backlog = lane.health, backlogs.get(name, Backlog())
            oldest = backlog.oldest_pending_ms
            found.append(
                {
                    "name": name,
                    "failing": health.failing_since_ms is not None,
                    "alert": alert_colours.get(name),
                    "pending": backlog.pending,
                    "oldest_pending_age_s": None if oldest is None else (now_ms - oldest) / 1000,
                    "dead": backlog.dead,
                    "consecutive_failures": health.consecutive_failures,
                    "failing_since_ms": health.failing_since_ms,
                    "failing_for_s": health.failing_for_s(now_ms),
                    "last_error": health.last_error,
                    "last_status": health.last_status,
                    "last_error_ms": health.last_error_ms,
                    "last_delivered_ms": health.last_delivered_ms,
                    "delivered": health.delivered,
                    "failed_attempts": health.failed_attempts,
                    "given_up": health.given_up,
                    "in_flight": len(lane.in_flight),
                    "alert_after_s": lane.receiver.alert_after_s,
                    "give_up_after_s": lane.receiver.give_up_after_s,
                }
            )
        return found

    @property
    def urgent(self) -> bool:
        """New alert events are on their way out: the decode loop takes shorter turns
        meanwhile, so each step of a delivery (outbox, request, response) waits for ~1 ms
        of decoding instead of ~10 ms. Retries do not count: they are not urgent."""
        return any(lane.woken or lane.first_attempts for lane in self.lanes.values())

    def wake(self) -> None:
        """Deliver what is due now rather than at the next look; safe from any thread."""
        if self._loop is None:
            return
        for lane in self.lanes.values():
            lane.woken = True
            self._loop.call_soon_threadsafe(lane.wakeup.set)

    async def aclose(self) -> None:
        for lane in self.lanes.values():
            await lane.http.aclose()

    async def run(self, interval_s: float = 0.5) -> None:
        self._loop = asyncio.get_running_loop()
        # Receivers are configured at start: rows left for one that is gone never go out.
        try:
            orphans = self.outbox.dead_unless_receiver(list(self.lanes), "receiver not configured")
        except STORE_ERRORS as exc:  # the store failing: the rows wait for the next start
            log.error("webhook outbox cannot be written", extra={"error": str(exc)[:300]})
            orphans = 0
        if orphans:
            self.results["dead"] += orphans
            log.error(
                "webhook events for receivers no longer configured; moved to the dead-letter list",
                extra={"events": orphans},
            )
        async with asyncio.TaskGroup() as lanes:
            for name, lane in self.lanes.items():
                lanes.create_task(lane.run(interval_s), name=f"webhook:{name}")


class ReceiverLane:
    """One receiver's deliveries: its own task, connections and bound on requests."""

    def __init__(self, dispatcher: Dispatcher, receiver: ReceiverSettings) -> None:
        self.dispatcher = dispatcher
        self.receiver = receiver
        self.name = receiver.name
        # Its own pool: a receiver that holds its connections open cannot starve another's.
        self.http = httpx.AsyncClient(
            headers={"User-Agent": "smartunit-monitor", "Content-Type": "application/json"},
            limits=httpx.Limits(max_connections=receiver.max_in_flight),
            timeout=receiver.timeout_s,
        )
        self.in_flight: dict[int, asyncio.Task[None]] = {}
        # Taken by the receiver, not yet written down (at most max_in_flight per outage).
        self.unrecorded: dict[int, tuple[OutboxRow, int]] = {}
        self.first_attempts = 0  # first attempts among those in flight: they are urgent
        self.woken = False
        self.wakeup = asyncio.Event()
        self.health = ReceiverHealth()

    async def run(self, interval_s: float) -> None:
        try:
            while True:
                self.wakeup.clear()
                self.woken = False  # before the look: a wake during it is not lost
                try:
                    self._start_due()
                except STORE_ERRORS as exc:  # the lane looks again at its next turn
                    self.dispatcher.failure_log.error(
                        f"store:{self.name}",
                        "webhook outbox unreadable: the alert store is unavailable",
                        receiver=self.name,
                        error=str(exc)[:300],
                    )
                except Exception:
                    # The store failing: this lane tries again at its next look, and the
                    # other lanes go on (a TaskGroup would stop them all on a raise).
                    log.exception("webhook outbox unreadable", extra={"receiver": self.name})
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval_s):
                        await self.wakeup.wait()
        finally:
            # Cancelled requests leave their rows pending: they go again at the next start.
            for task in self.in_flight.values():
                task.cancel()
            await asyncio.gather(*self.in_flight.values(), return_exceptions=True)
            with contextlib.suppress(*STORE_ERRORS):  # else sent again at the next start
                self._record_delivered()

    def _start_due(self) -> None:
        self._record_delivered()
        room = self.receiver.max_in_flight - len(self.in_flight)
        if room <= 0:
            return
        # A row in flight is still pending, so it comes back: ask for that many more.
        rows = self.dispatcher.outbox.due(
            round(time.time() * 1000), self.receiver.name, limit=len(self.in_flight) + room
        )
        for row in rows:
            if room == 0:
                break
            if row.id in self.in_flight or row.id in self.unrecorded:
                continue
            room -= 1
            self.first_attempts += row.attempts == 0
            self.in_flight[row.id] = asyncio.create_task(self._deliver(row))

    async def _deliver(self, row: OutboxRow) -> None:
        look_again = True
        try:
            await self._send(row)
        except Exception:
            # A bug or a failing store: the row stays pending; look again at the next
            # interval, not at once, so a lasting failure does not spin.
            look_again = False
            log.exception("webhook delivery broke", extra={"receiver": self.name})
        finally:
            del self.in_flight[row.id]
            self.first_attempts -= row.attempts == 0
            if look_again:
                self.wakeup.set()  # a slot is free, and the alert's next event may go

    async def _send(self, row: OutboxRow) -> None:
        receiver, dispatcher = self.receiver, self.dispatcher
        outbox, results = dispatcher.outbox, dispatcher.results
        headers = {EVENT_ID_HEADER: row.event_key}
        if receiver.secret is not None:
            headers[SIGNATURE_HEADER] = sign(
                receiver.secret.get_secret_value(), row.payload, int(time.time())
            )
        error: str
        status: int | None = None  # None: nothing answered
        retry_after: float | None = None
        try:
            # httpx's timeouts are per connect and per read: a receiver sending a byte
            # every few seconds would never trip them. This deadline covers it all.
            async with asyncio.timeout(receiver.timeout_s):
                response = await self.http.post(receiver.url, content=row.payload, headers=headers)
        except TimeoutError:
            error = f"no complete answer within {receiver.timeout_s:g} s"
        except Exception as exc:
            # Whatever the network or the answer does to the client library, this attempt
            # failed and is retried. Its message may name the URL: never its secrets.
            error = f"{type(exc).__name__}: {scrub(str(exc), receiver.url)}"
        else:
            status = response.status_code
            if 200 <= status < 300:
                now_ms = round(time.time() * 1000)
                self.unrecorded[row.id] = (row, now_ms)
                results["delivered"] += 1
                with contextlib.suppress(*STORE_ERRORS):  # written down at the next look
                    self._record_delivered()
                self._delivered(now_ms)
                return
            error = f"HTTP {status}: {scrub(response.text[:200], receiver.url)}"
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        now_ms = round(time.time() * 1000)
        self.health.record_failure(now_ms, error, status)
        if status is not None and 400 <= status < 500 and status not in (408, 429):
            self._dead(row, error, "webhook refused for good; moved to the dead-letter list")
            return
        waited_s = (now_ms - row.created_ms) / 1000
        if waited_s >= receiver.give_up_after_s:
            self._dead(
                row,
                f"given up after {waited_s:.0f} s: {error}",
                "webhook event not taken within give_up_after_s; moved to the dead-letter list",
                given_up=True,
            )
            return
        delay = dispatcher.backoff.delay(row.attempts + 1, retry_after_s=retry_after)
        outbox.retry_later(row.id, round((time.time() + delay) * 1000), error)
        results["retried"] += 1
        dispatcher.failure_log.warning(
            f"failed:{self.name}",
            "webhook delivery failed; will retry",
            receiver=self.name,
            event=row.event_key,
            error=error,
            retry_in_s=round(delay, 2),
            attempts=row.attempts + 1,
            consecutive_failures=self.health.consecutive_failures,
        )

    def _record_delivered(self) -> None:
        """Write down the deliveries the receiver took. One the store did not take (it is
        down) stays in memory, is written at the lane's next look, and is not sent again
        meanwhile: its idempotency key reaches the receiver once."""
        outbox, book = self.dispatcher.outbox, self.dispatcher.book
        for row_id, (row, at_ms) in list(self.unrecorded.items()):
            outbox.delivered(row_id, at_ms)
            book.dispatched(row.alert_id, now_ms=at_ms, actor=f"webhook:{row.receiver}")
            del self.unrecorded[row_id]

    def _delivered(self, now_ms: int) -> None:
        health = self.health
        if health.failing_since_ms is not None:
            # It is back: what waits for it goes now, not each event at the end of its
            # own backoff (up to retry_max_s after the receiver recovered).
            waiting = self.dispatcher.outbox.retry_now(self.name)
            log.warning(
                "webhook receiver takes events again",
                extra={
                    "receiver": self.name,
                    "failed_for_s": round(health.failing_for_s(now_ms), 1),
                    "failed_attempts": health.consecutive_failures,
                    "waiting": waiting,
                },
            )
        health.record_delivery(now_ms)

    def _dead(self, row: OutboxRow, error: str, message: str, *, given_up: bool = False) -> None:
        self.dispatcher.outbox.dead(row.id, error)
        self.dispatcher.results["dead"] += 1
        self.health.record_dead_letter(given_up=given_up)
        # Never silent: every one counted (API, /metrics) and raised as an operator alert.
        self.dispatcher.failure_log.error(
            f"dead:{self.name}", message, receiver=self.name, event=row.event_key, error=error
        )
