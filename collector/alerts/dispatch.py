"""Delivering the outbox: at least once, in order per alert and receiver, signed.

Each outbox row is one event for one receiver, written in the same transaction as the
alert change that caused it, so nothing decided is ever lost, even if the service is
killed mid-delivery (the row is simply sent again: receivers drop repeats by the
``X-SmartUnit-Event-Id`` idempotency key).

Answers are classified like the InfluxDB writes: 2xx delivered; timeouts, connection
errors, 408, 429 and 5xx retried with capped exponential backoff, honouring Retry-After;
any other 4xx means the receiver refuses this message for good: it goes to the
dead-letter list (status ``dead``) with an error log for the operator, and the alert's
later events for that receiver go on.

New rows go out at once: the alert book's listener calls ``wake`` (from any thread) after
each committed change. The ``run`` loop also looks every ``interval_s`` for rows whose
retry time has come.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Sequence

import httpx

from collector.alerts.lifecycle import AlertBook
from collector.alerts.notify import EVENT_ID_HEADER, SIGNATURE_HEADER, sign
from collector.alerts.pending import STORE_ERRORS
from collector.alerts.store import AlertStore, OutboxRow
from collector.config import ReceiverSettings
from collector.influx import retry_after_seconds

log = logging.getLogger(__name__)


class Dispatcher:
    def __init__(
        self,
        store: AlertStore,
        receivers: Sequence[ReceiverSettings],
        book: AlertBook,
        *,
        retry_initial_s: float = 1.0,
        retry_max_s: float = 300.0,
    ) -> None:
        self.store = store
        self.receivers = {r.name: r for r in receivers}
        self.book = book
        self.retry_initial_s, self.retry_max_s = retry_initial_s, retry_max_s
        self.results: Counter[str] = Counter()
        self._http = httpx.AsyncClient(
            headers={"User-Agent": "smartunit-monitor", "Content-Type": "application/json"}
        )
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        # New alert events are on their way out: the decode loop takes shorter turns
        # meanwhile, so each step of a delivery (outbox, request, response) waits for
        # ~1 ms of decoding instead of ~10 ms. Retries do not count: they are not urgent.
        self.urgent = False

    def wake(self) -> None:
        """Deliver what is due now rather than at the next look; safe from any thread."""
        if self._loop is not None:
            self.urgent = True
            self._loop.call_soon_threadsafe(self._wakeup.set)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def run(self, interval_s: float = 0.5) -> None:
        self._loop = asyncio.get_running_loop()
        while True:
            self._wakeup.clear()
            try:
                sent = await self.deliver_due()
            except STORE_ERRORS as exc:
                # The outbox cannot be written: what went out stays pending and goes
                # again later (receivers drop repeats by the event id).
                log.error("webhook outbox cannot be written", extra={"error": str(exc)[:300]})
                sent = 0
            if not sent:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), interval_s)

    async def deliver_due(self) -> int:
        rows = self.store.due(round(time.time() * 1000))
        self.urgent = any(row.attempts == 0 for row in rows)
        if rows:
            await asyncio.gather(*(self._deliver(row) for row in rows))
        self.urgent = False
        return len(rows)

    async def _deliver(self, row: OutboxRow) -> None:
        receiver = self.receivers.get(row.receiver)
        if receiver is None:
            self.store.dead(row.id, "receiver no longer configured")
            self.results["dead"] += 1
            return
        headers = {EVENT_ID_HEADER: row.event_key}
        if receiver.secret is not None:
            headers[SIGNATURE_HEADER] = sign(
                receiver.secret.get_secret_value(), row.payload, int(time.time())
            )
        error: str
        retry_after: float | None = None
        try:
            response = await self._http.post(
                receiver.url, content=row.payload, headers=headers, timeout=receiver.timeout_s
            )
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        else:
            status = response.status_code
            if 200 <= status < 300:
                now_ms = round(time.time() * 1000)
                self.store.delivered(row.id, now_ms)
                self.results["delivered"] += 1
                self.book.dispatched(row.alert_id, now_ms=now_ms, actor=f"webhook:{row.receiver}")
                return
            error = f"HTTP {status}: {response.text[:200]}"
            if 400 <= status < 500 and status not in (408, 429):
                self.store.dead(row.id, error)
                self.results["dead"] += 1
                log.error(
                    "webhook refused for good; moved to the dead-letter list",
                    extra={"receiver": row.receiver, "event": row.event_key, "error": error},
                )
                return
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        delay = min(self.retry_initial_s * 2**row.attempts, self.retry_max_s)
        delay *= random.uniform(0.8, 1.2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.retry_max_s))
        self.store.retry_later(row.id, round((time.time() + delay) * 1000), error)
        self.results["retried"] += 1
        log.warning(
            "webhook delivery failed; will retry",
            extra={
                "receiver": row.receiver,
                "event": row.event_key,
                "error": error,
                "retry_in_s": round(delay, 2),
                "attempts": row.attempts + 1,
            },
        )
