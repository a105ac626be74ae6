"""Transport ``nats``: devices on the MQTT gateway of a NATS cluster (``transport = "nats"``).

Devices keep protocol v1 over MQTT 3.1.1 (topics, QoS 1, retained status, last will). The
collector takes their data from JetStream: the servers' subject mapping puts each device's
data subject into one of ``nats.partitions`` partitions (``collector.natssubjects``), the
MQTT gateway stores every QoS 1 publish in its stream ``$MQTT_msgs`` before it sends the
PUBACK, and one durable pull consumer per partition reads it. A message is acknowledged to
JetStream only after its readings were handed off durably (InfluxDB or the spool), in
arrival order, like the MQTT source's PUBACKs. Messages held longer (InfluxDB and the
spool unavailable) are reported in progress every third of ``nats.ack_wait_s``; those of
a collector that died are delivered again after ``nats.ack_wait_s``, those of one that
stopped cleanly at once.

Everything else (device status, the units' acknowledgements and states, the collector's
own status with its last will, the downlink and the rejection copies) goes over one MQTT
3.1.1 session with the gateway (``collector.natsgateway``; the gateway refuses MQTT 5),
persistent and acknowledged after hand-off too.

Which partitions this collector reads is decided by leases shared with the other
collectors of the cluster (``collector.natsleases``); the detectors' state of each
partition goes with it (``collector.natscheckpoints``).

The inbox is bounded by ``mqtt.receive_maximum`` messages: a partition fetches only while
what was fetched and not yet acknowledged leaves room, so the backlog stays in the stream,
replicated on disk, and the stream is bounded by ``nats.stream_max_bytes``. Beyond that the
gateway refuses a device's publish (no PUBACK) and the device keeps the reading and retries.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from collector.backoff import Backoff
from collector.config import MqttSettings, NatsSettings
from collector.logs import RateLimitedLog
from collector.mqtt import Inbound
from collector.natsgateway import GatewaySession
from collector.natsleases import PartitionLeases
from collector.natspull import PartitionPuller, delivery_of
from collector.natsstream import (
    PartitionMappingError,
    check_partitioning,
    consumer_name,
    provision,
)
from collector.natssubjects import (
    MQTT_MESSAGES_STREAM,
    device_token,
    partition_of,
    partitioned_topic,
    subject_to_topic,
)

if TYPE_CHECKING:
    from collector.natscheckpoints import PartitionCheckpoints

log = logging.getLogger(__name__)

JETSTREAM = -1  # the generation of messages from JetStream: acknowledged on any connection
FETCH_WAIT_S = 5.0  # a pull request's life at the server; messages come as they arrive
# JetStream's acknowledgements: a publish to the message's reply subject with this body
ACK, NAK, IN_PROGRESS = b"", b"-NAK", b"+WPI"
_NATS_ERRORS = (nats.errors.Error, nats.js.errors.Error, OSError, TimeoutError)


class NatsSource(GatewaySession):
    """Data from the partitions' durable consumers, the rest over one MQTT 3.1.1 session."""

    def __init__(
        self,
        settings: MqttSettings,
        nats_settings: NatsSettings,
        subscriptions: Sequence[str],
        *,
        status_topic: str,
    ) -> None:
        super().__init__(settings, subscriptions, status_topic=status_topic)
        self.nats = nats_settings
        # handed on, not acknowledged yet, oldest first:
        # (reply subject, partition, stream sequence, fetched at)
        self._pending: dict[int, tuple[str, int, int, float]] = {}
        self._held: collections.Counter[int] = collections.Counter()  # of _pending, by partition
        self._pullers: dict[int, PartitionPuller] = {}
        self._fetchers: dict[int, asyncio.Task[None]] = {}
        self.leases: PartitionLeases | None = None
        self.checkpoints: PartitionCheckpoints | None = None  # set by the composition root
        # partition -> the newest stream sequence acknowledged (hence judged) in it
        self.positions: dict[int, int] = {}
        self._next_key = 0
        self._requested = 0  # asked for by pull requests open, not arrived yet
        self._acks: collections.deque[str] = collections.deque()  # their reply subjects
        self._acks_waiting = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._nc: NatsClient | None = None
        self.redelivered = 0  # messages JetStream delivered again (not acknowledged in time)
        self.ack_failures = 0
        self._error_log = RateLimitedLog(log, 30.0)

    # -- JetStream (the event loop) --------------------------------------------------------

    def start(self) -> None:
        self.start_session()
        assert self._loop is not None
        self._tasks.append(self._loop.create_task(self._run(), name="nats"))

    async def _run(self) -> None:
        backoff = Backoff(
            initial_s=self.settings.reconnect_min_s, max_s=self.settings.reconnect_max_s
        )
        attempt = 0
        while not self._closing:
            try:
                await self._session()
                return
            except (*_NATS_ERRORS, PartitionMappingError) as exc:
                attempt += 1
                log.error("NATS JetStream not ready, retrying: %s", exc)
            finally:
                self._set_up("data", False)
                if self._nc is not None:
                    with contextlib.suppress(*_NATS_ERRORS):
                        await self._nc.close()
                    self._nc = None
            await asyncio.sleep(backoff.delay(attempt))

    async def _session(self) -> None:
        nc = self._nc = await nats.connect(
            servers=[url.strip() for url in self.nats.url.split(",")],
            name=self.settings.client_id,
            max_reconnect_attempts=-1,  # a cluster's nodes come and go; never give up
            reconnect_time_wait=self.settings.reconnect_min_s,
            disconnected_cb=self._nats_disconnected,
            reconnected_cb=self._nats_reconnected,
            error_cb=self._nats_error,
        )
        js = nc.jetstream()
        await provision(js, self.nats)
        await check_partitioning(nc, self.nats.partitions)
        self._pullers = {
            partition: PartitionPuller(
                nc,
                stream=MQTT_MESSAGES_STREAM,
                consumer=consumer_name(self.nats, partition),
                batch=self.nats.fetch_batch,
                expires_s=FETCH_WAIT_S,
                room=self._inbox_room,
                reserve=self._reserve,
                admit=self._admit,
            )
            for partition in range(self.nats.partitions)
        }
        leases = self.leases = PartitionLeases(
            js,
            instance=self.settings.client_id,
            partitions=self.nats.partitions,
            ttl_s=self.nats.lease_ttl_s,
            replicas=self.nats.stream_replicas,
        )
        await leases.open()
        if self.checkpoints is not None:
            await self.checkpoints.open(js)
        self._set_up("data", True)
        tasks = [
            asyncio.create_task(self._send_acks(), name="nats-acks"),
            asyncio.create_task(self._keep_claims(), name="nats-in-progress"),
            asyncio.create_task(self._keep_ownership(leases), name="nats-leases"),
        ]
        if self.checkpoints is not None:
            keep = self.checkpoints.keep(lambda: self._owned_positions(leases))
            tasks.append(asyncio.create_task(keep, name="nats-checkpoints"))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in [*tasks, *self._fetchers.values()]:
                task.cancel()
            await asyncio.gather(*tasks, *self._fetchers.values(), return_exceptions=True)
            self._fetchers.clear()

    async def _keep_ownership(self, leases: PartitionLeases) -> None:
        """Read the partitions this collector holds the lease of (collector/natsleases.py)."""
        failures = 0
        while True:
            try:
                change = await leases.round(self._idle, self._release)
                failures = 0
            except _NATS_ERRORS as exc:
                failures += 1
                self._error_log.warning("nats_leases", "lease round failed", error=str(exc)[:200])
            else:
                released = {p for p in change.lost | change.surplus if p not in leases.owned}
                for partition in change.surplus - released:
                    # Its puller stops asking (the server drops its open pull requests),
                    # and the partition goes once what it holds is stored and acknowledged
                    # (``_idle``) and its detector state handed over (``_release``).
                    fetcher = self._fetchers.get(partition)
                    if fetcher is not None and not fetcher.done():
                        fetcher.cancel()
                for partition in released:
                    fetcher = self._fetchers.pop(partition, None)
                    if fetcher is not None:
                        fetcher.cancel()  # lost: another collector reads it already
                if self.checkpoints is not None:
                    self.checkpoints.forget(released)
                # together: each within the checkpoints' deadline, so the leases are
                # renewed in time however many partitions came
                gained = sorted(change.gained)
                await asyncio.gather(*(self._restore(partition) for partition in gained))
                for partition in gained:
                    self._fetchers[partition] = asyncio.create_task(
                        self._pullers[partition].run(), name=f"nats-p{partition}"
                    )
            await asyncio.sleep(leases.period_s / (2 if failures else 1))

    def _owned_positions(self, leases: PartitionLeases) -> dict[int, int]:
        return {p: self.positions.get(p, 0) for p in leases.owned if p in self._fetchers}

    async def _restore(self, partition: int) -> None:
        """The partition's detector state, before its first message is judged here."""
        if self.checkpoints is not None:
            position = await self.checkpoints.restore(partition) or 0
            self.positions[partition] = max(self.positions.get(partition, 0), position)

    async def _release(self, partition: int) -> None:
        """Hand a partition's detector state over before its lease goes."""
        if self.checkpoints is not None:
            await self.checkpoints.save(partition, self.positions.get(partition, 0))

    def reads_device(self, device: str) -> bool:
        """Whether this collector reads the device's partition now."""
        return partition_of(device_token(device), self.nats.partitions) in self._fetchers

    def _idle(self, partition: int) -> bool:
        """Nothing of the partition is read or held unacknowledged: another may take it."""
        fetcher = self._fetchers.get(partition)
        return (fetcher is None or fetcher.done()) and not self._held[partition]

    async def _nats_disconnected(self) -> None:
        self._set_up("data", False)
        log.warning("NATS connection lost, reconnecting")

    async def _nats_reconnected(self) -> None:
        self._set_up("data", True)

    async def _nats_error(self, exc: Exception) -> None:
        self._error_log.warning("nats_error", "NATS client error", error=str(exc)[:200])

    def _inbox_room(self) -> int:
        """Messages the partitions may still request: the inbox bound, less what is held
        and what open requests may bring."""
        return self.settings.receive_maximum - len(self._pending) - self._requested

    def _reserve(self, count: int) -> None:
        self._requested += count

    def _admit(self, messages: list[Msg]) -> None:
        now_ms, fetched_at = time.time_ns() // 1_000_000, time.monotonic()
        for msg in messages:
            parsed = partitioned_topic(msg.subject)
            # Any other shape is handed on as it came, and ingest refuses it as a bad topic.
            partition, topic = parsed if parsed else (-1, subject_to_topic(msg.subject))
            delivered, sequence = delivery_of(msg.reply)
            self._next_key += 1
            self._pending[self._next_key] = (msg.reply, partition, sequence, fetched_at)
            self._held[partition] += 1
            self._inbox.append(
                Inbound(topic, msg.data, self._next_key, 1, JETSTREAM, now_ms, False)
            )
            if delivered > 1:
                self.redelivered += 1
        self.received += len(messages)
        if messages:
            self._wakeup.set()

    def ack(self, messages: Sequence[Inbound]) -> int:
        """Acknowledge stored messages: JetStream's in the order given, the session's
        PUBACKs on the connection that delivered them (earlier ones come again anyway)."""
        sent = 0
        generation = self.generation
        for message in messages:
            if message.generation == JETSTREAM:
                held = self._pending.pop(message.mid, None)
                if held is not None:
                    reply, partition, sequence, _ = held
                    self._acks.append(reply)
                    self._held[partition] -= 1
                    if sequence > self.positions.get(partition, 0):
                        self.positions[partition] = sequence
                    sent += 1
            elif message.qos > 0 and message.generation == generation:
                self.link.ack(message.mid, message.qos)
                sent += 1
        if self._acks:
            self._acks_waiting.set()
            for puller in self._pullers.values():
                if puller.starved:
                    puller.wake()
        return sent

    async def _send_acks(self) -> None:
        while True:
            await self._acks_waiting.wait()
            self._acks_waiting.clear()
            await self._flush_acks()

    async def _keep_claims(self) -> None:
        """Tell JetStream the messages held are being worked on (stored, or waiting for
        InfluxDB or the spool), so only a collector that died has them delivered again
        after ``nats.ack_wait_s``."""
        while True:
            period = self.nats.ack_wait_s / 3  # each reported within two periods of arrival
            await asyncio.sleep(period)
            held_since = time.monotonic() - period
            nc = self._nc
            for reply, _, _, fetched_at in list(self._pending.values()):
                if fetched_at > held_since or nc is None:
                    break  # the rest came later: usually all, stored within a second
                with contextlib.suppress(*_NATS_ERRORS):
                    await nc.publish(reply, IN_PROGRESS)

    async def _flush_acks(self) -> None:
        """Publish the acknowledgements due, in order: nats-py buffers them and its flusher
        writes them to the socket together. One per message, not one for all: a
        consumer acknowledging ``all`` (an acknowledgement covers every earlier message)
        would also cover the messages a collector that died had fetched and not stored,
        which JetStream delivers again only after newer ones (docs/cluster.md)."""
        acks = self._acks
        while acks:
            nc = self._nc
            reply = acks.popleft()
            try:
                if nc is None:
                    raise nats.errors.ConnectionClosedError
                await nc.publish(reply, ACK)
            except _NATS_ERRORS as exc:
                # JetStream delivers it again after ack_wait: stored twice, the same point.
                self.ack_failures += 1
                self._error_log.warning("nats_ack", "NATS ack failed", error=str(exc)[:200])

    async def aclose(self) -> None:
        """Send the acknowledgements due, say "offline" (retained), disconnect both."""
        self._closing = True
        nc = self._nc
        if nc is not None and nc.is_connected:
            await self._flush_acks()
            # Not stored: delivered again at once, to whoever reads the partition next,
            # rather than after ack_wait.
            for reply, _, _, _ in self._pending.values():
                with contextlib.suppress(*_NATS_ERRORS):
                    await nc.publish(reply, NAK)
            self._pending.clear()
            self._held.clear()
            if self.leases is not None:  # the others take our partitions over at once
                for partition in list(self.leases.owned):
                    await self._release(partition)
                with contextlib.suppress(*_NATS_ERRORS):
                    await self.leases.leave()
            with contextlib.suppress(*_NATS_ERRORS):
                await nc.flush(timeout=2)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)  # closes the connection
        await self.close_session()
