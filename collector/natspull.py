"""A partition's continuous pull from its durable consumer (transport ``nats``).

JetStream hands a pull consumer's messages out only against pull requests ("send me up to
N, waiting at most T"). The puller keeps requests open for up to ``nats.fetch_batch``
messages at all times, asks again once half of them have come, and hands each message
on as it arrives: no message waits for a batch to fill, and the fetch loop costs no task,
timer or id per message (nats-py's ``fetch`` does, and its cost was most of the
transport's). Messages of one consumer arrive in stream order on one inbox, requests
served in turn, so the hand-off order is the partition's order.

Credit: a message requested counts against the collector's inbox bound
(``mqtt.receive_maximum``) from the request on, through ``reserve``; each arrival or
request ended (the server's 408/409 status says how many it still owed) gives its share
back, so what is fetched and requested together never exceeds the bound. Requests lost
without a status (a connection dropped, a server restarted) are written off a grace
period after they expired; a late message of one is still handed on, never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from collector.logs import RateLimitedLog

log = logging.getLogger(__name__)

HEARTBEAT = "100"  # flow control / idle heartbeat: not an answer to a request
ACK_PREFIX = "$JS.ACK."
PENDING_MESSAGES = "Nats-Pending-Messages"  # what an ended request still owed
LOST_REQUEST_GRACE_S = 2.0


class PartitionPuller:
    """Pull requests and arrivals of one partition's durable consumer."""

    def __init__(
        self,
        nc: NatsClient,
        *,
        stream: str,
        consumer: str,
        batch: int,
        expires_s: float,
        room: Callable[[], int],
        reserve: Callable[[int], None],
        admit: Callable[[list[Msg]], None],
    ) -> None:
        self._nc = nc
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox = nc.new_inbox()
        self._batch = batch
        self._expires_s = expires_s
        self._room = room
        self._reserve = reserve
        self._admit = admit
        self.outstanding = 0  # requested, neither arrived nor ended
        self.starved = False  # waiting for room in the inbox
        self._requests_end = 0.0  # monotonic: the newest request expires
        self._arrived: list[Msg] = []
        self._arrived_requested = 0  # of _arrived: their room is reserved until handed on
        self._wake = asyncio.Event()
        self._error_log = RateLimitedLog(log, 30.0)

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Until cancelled: keep requests open while the inbox has room."""
        sub = await self._nc.subscribe(self._inbox, cb=self._on_message)
        try:
            while True:
                self._write_off_lost_requests()
                if self.outstanding <= self._batch // 2:
                    room = self._room()
                    self.starved = room <= 0
                    if not self.starved:
                        await self._request(min(self._batch - self.outstanding, room))
                self._wake.clear()
                # asyncio.timeout, not wait_for: Python 3.11's wait_for returns normally
                # when cancelled in the turn the event is set, and the puller would go on
                # reading a partition given up.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._expires_s + LOST_REQUEST_GRACE_S):
                        await self._wake.wait()
        finally:
            self._owed(self.outstanding)
            # No interest left in the inbox: the servers drop the requests still open.
            with contextlib.suppress(nats.errors.Error, OSError):
                await sub.unsubscribe()

    async def _request(self, count: int) -> None:
        request = {"batch": count, "expires": int(self._expires_s * 1e9)}
        try:
            await self._nc.publish(
                self._next_subject, json.dumps(request).encode(), reply=self._inbox
            )
        except (nats.errors.Error, OSError) as exc:  # closed or draining: try again later
            self._error_log.warning("nats_pull", "NATS pull request failed", error=str(exc))
            await asyncio.sleep(LOST_REQUEST_GRACE_S)
            return
        self.outstanding += count
        self._reserve(count)
        self._requests_end = time.monotonic() + self._expires_s

    def _write_off_lost_requests(self) -> None:
        if self.outstanding and time.monotonic() > self._requests_end + LOST_REQUEST_GRACE_S:
            self._owed(self.outstanding)

    def _owed(self, count: int) -> None:
        """``count`` requested messages will not come: their room goes back."""
        count = min(count, self.outstanding)
        if count > 0:
            self.outstanding -= count
            self._reserve(-count)
            self._wake.set()

    async def _on_message(self, msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers else None
        if status is None:
            if self.outstanding:
                self.outstanding -= 1
                self._arrived_requested += 1
                if self.outstanding == self._batch // 2:
                    self._wake.set()
            if not self._arrived:  # handed on together, once this read is parsed
                asyncio.get_running_loop().call_soon(self._hand_on)
            self._arrived.append(msg)
        elif status != HEARTBEAT:
            # 408: a request expired; 409: ended by the server (leader change, limits).
            owed = msg.headers.get(PENDING_MESSAGES) if msg.headers else None
            self._owed(int(owed) if owed and owed.isdigit() else self.outstanding)
            if status != "408":
                self._error_log.warning(
                    "nats_pull_status",
                    "NATS pull request ended",
                    status=status,
                    description=(msg.headers or {}).get("Description", ""),
                )

    def _hand_on(self) -> None:
        arrived, self._arrived = self._arrived, []
        credited, self._arrived_requested = self._arrived_requested, 0
        self._admit(arrived)
        self._reserve(-credited)


def delivery_of(reply: str) -> tuple[int, int]:
    """(times delivered, stream sequence) of a JetStream message, read from its reply
    subject: ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>...`` (9 tokens), or
    with a domain and an account hash after ``$JS.ACK`` (11 or 12 tokens). nats-py's
    ``Msg.metadata`` parses the same subject into objects and a timestamp at each use,
    a cost on every message here. A reply of another shape: delivered once, sequence 0
    (the partition's position does not move)."""
    if not reply.startswith(ACK_PREFIX):
        return 1, 0
    tokens = reply.split(".")
    first = 4 if len(tokens) == 9 else 6 if len(tokens) >= 11 else -1
    if first < 0 or not (tokens[first].isdigit() and tokens[first + 1].isdigit()):
        return 1, 0
    return int(tokens[first]), int(tokens[first + 1])
