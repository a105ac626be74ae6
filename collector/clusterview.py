"""The operator's view of a cluster (``transport = "nats"``): who is alive, who owns which
partition, how far each partition's consumer is behind.

A task reads it every lease round (a third of ``nats.lease_ttl_s``), on a NATS
connection of its own, off the readings' path; ``/api/cluster``, ``/metrics`` and the
operator checks answer from the last reading. One reading costs a fixed number of
requests whatever the fleet: the stream's info, the consumer list (one page per 256
partitions) and one pass over the lease bucket (``collector.natsleases``: one entry per
member and per owned partition). A reading that fails keeps the last answer, marked
with its age and the error.

Two operator alerts, raised by every instance that sees the condition under one shared
fingerprint (device ``_cluster``), so a shared PostgreSQL store keeps one alert:

- ``partition-unowned`` (red): a partition has had no lease for longer than two lease
  TTLs. Nobody reads it: its devices' readings wait in the stream, unstored and
  unjudged. Clears once every partition is owned.
- ``partition-lag`` (orange): a partition's consumer has had at least
  ``nats.lag_alert_messages`` messages not yet acknowledged (pending + delivered and not
  acknowledged) for ``nats.lag_alert_intervals`` stats intervals in a row; clears below
  half of it.

With ``transport = "mqtt"`` the view is one instance and no partitions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo

from collector.config import Settings
from collector.detection import DetectionEvent
from collector.logs import RateLimitedLog
from collector.metrics import Value
from collector.natsleases import BUCKET
from collector.natsstream import consumer_name
from collector.natssubjects import MQTT_MESSAGES_STREAM
from collector.operator import OperatorAlarm

if TYPE_CHECKING:
    from collector.natscheckpoints import PartitionCheckpoints

log = logging.getLogger(__name__)

CLUSTER_DEVICE = "_cluster"  # the operator alerts' device: one fingerprint for all instances
UNOWNED_DETECTOR = "partition-unowned"
LAG_DETECTOR = "partition-lag"
UNOWNED_AFTER_TTLS = 2  # a claim takes up to a TTL and a round: twice the TTL is a fault
CONSUMER_PAGE = 256  # JetStream's page of a consumer list
_NATS_ERRORS = (nats.errors.Error, nats.js.errors.Error, OSError, TimeoutError)


@dataclass
class Lease:
    holder: str
    written_at_s: float  # the server's time of the last write (epoch seconds)


@dataclass
class Reading:
    """One pass over the cluster's state."""

    taken_at_s: float  # epoch seconds
    taken_at_mono: float
    members: dict[str, Lease] = field(default_factory=dict)  # instance -> its membership
    owners: dict[int, Lease] = field(default_factory=dict)  # partition -> its lease
    consumers: dict[int, ConsumerInfo] = field(default_factory=dict)
    stream: dict[str, Any] | None = None


class ClusterView:
    def __init__(self, settings: Settings) -> None:
        self.transport = settings.transport
        self.instance = settings.mqtt.client_id
        self.nats = settings.nats
        self.period_s = settings.nats.lease_ttl_s / 3
        self.reading: Reading | None = None
        self.error = ""
        self._unowned_since: dict[int, float] = {}  # partition -> monotonic, first seen free
        self._judged: Reading | None = None
        self.unowned = OperatorAlarm(
            detector=UNOWNED_DETECTOR,
            quantity="unowned_partitions",
            limit=1.0,
            collector=CLUSTER_DEVICE,
            colour="red",
        )
        lag_limit = settings.nats.lag_alert_messages
        self.lag = (
            OperatorAlarm(
                detector=LAG_DETECTOR,
                quantity="partition_lag",
                limit=float(lag_limit),
                collector=CLUSTER_DEVICE,
                intervals=settings.nats.lag_alert_intervals,
            )
            if lag_limit > 0
            else None
        )
        self._error_log = RateLimitedLog(log, 60.0)
        # the partitions' detector-state checkpoints, counted in metrics (set where wired)
        self.checkpoints: PartitionCheckpoints | None = None

    @property
    def clustered(self) -> bool:
        return self.transport == "nats"

    # -- reading (its own task) -------------------------------------------------------------

    async def run(self) -> None:
        if not self.clustered:
            return
        nc: NatsClient | None = None
        try:
            while True:
                try:
                    if nc is None or nc.is_closed:
                        nc = await nats.connect(
                            servers=[url.strip() for url in self.nats.url.split(",")],
                            name=f"{self.instance}-view",
                            max_reconnect_attempts=-1,
                            connect_timeout=self.period_s + 1,
                        )
                    async with asyncio.timeout(self.period_s * 3):
                        await self.refresh(nc.jetstream())
                    self.error = ""
                except _NATS_ERRORS as exc:
                    self.error = str(exc)[:200] or type(exc).__name__
                    self._error_log.warning(
                        "cluster_view", "cluster view not read", error=self.error
                    )
                await asyncio.sleep(self.period_s)
        finally:
            if nc is not None:
                with contextlib.suppress(*_NATS_ERRORS):
                    await nc.close()

    async def refresh(self, js: JetStreamContext) -> None:
        reading = Reading(taken_at_s=time.time(), taken_at_mono=time.monotonic())
        info = await js.stream_info(MQTT_MESSAGES_STREAM)
        state = info.state
        reading.stream = {
            "name": MQTT_MESSAGES_STREAM,
            "messages": state.messages,
            "bytes": state.bytes,
            "first_seq": state.first_seq,
            "last_seq": state.last_seq,
            "consumers": state.consumer_count,
            "replicas": info.config.num_replicas or 1,
            "leader": info.cluster.leader if info.cluster is not None else None,
        }
        reading.consumers = await self._consumers(js, total=state.consumer_count)
        await self._leases(js, reading)
        for partition in range(self.nats.partitions):
            if partition in reading.owners:
                self._unowned_since.pop(partition, None)
            else:
                self._unowned_since.setdefault(partition, reading.taken_at_mono)
        self.reading = reading

    async def _consumers(self, js: JetStreamContext, *, total: int) -> dict[int, ConsumerInfo]:
        names = {consumer_name(self.nats, p): p for p in range(self.nats.partitions)}
        found: dict[int, ConsumerInfo] = {}
        for offset in range(0, max(total, 1), CONSUMER_PAGE):
            for consumer in await js.consumers_info(MQTT_MESSAGES_STREAM, offset=offset or None):
                partition = names.get(consumer.name)
                if partition is not None:
                    found[partition] = consumer
        return found

    async def _leases(self, js: JetStreamContext, reading: Reading) -> None:
        try:
            kv = await js.key_value(BUCKET)
        except nats.js.errors.BucketNotFoundError:
            return  # no collector has started yet
        watcher = await kv.watchall(ignore_deletes=True)
        try:
            while True:
                entry = await watcher.updates(timeout=self.period_s * 2)  # type: ignore[no-untyped-call]
                if entry is None:
                    break  # the bucket's current entries are all read
                if not entry.value or entry.created is None:
                    continue
                created: Any = entry.created  # a datetime, though declared an int
                written = created.timestamp() if isinstance(created, datetime) else created / 1e9
                if reading.taken_at_s - written > self.nats.lease_ttl_s:
                    continue  # expired; a server may not have removed it yet
                lease = Lease(holder=entry.value.decode(errors="replace"), written_at_s=written)
                kind, _, name = entry.key.partition(".")
                if kind == "member":
                    reading.members[lease.holder] = lease
                elif kind == "owner" and name.isdigit() and int(name) < self.nats.partitions:
                    reading.owners[int(name)] = lease
                if entry.delta == 0:
                    break
        finally:
            with contextlib.suppress(*_NATS_ERRORS):
                await watcher.stop()  # type: ignore[no-untyped-call]

    # -- answers ---------------------------------------------------------------------------

    def answer(self) -> dict[str, Any]:
        """What ``GET /api/cluster`` returns."""
        if not self.clustered:
            return {
                "transport": self.transport,
                "instance": self.instance,
                "instances": [
                    {"id": self.instance, "this": True, "partitions": [], "lease_age_s": None}
                ],
                "partitions": [],
                "stream": None,
                "read_at_ms": int(time.time() * 1000),
                "error": "",
            }
        reading = self.reading
        now_s, now_mono = time.time(), time.monotonic()
        base: dict[str, Any] = {
            "transport": self.transport,
            "instance": self.instance,
            "lease_ttl_s": self.nats.lease_ttl_s,
            "error": self.error,
        }
        if reading is None:
            return {
                **base,
                "instances": [
                    {"id": self.instance, "this": True, "partitions": [], "lease_age_s": None}
                ],
                "partitions": [],
                "stream": None,
                "read_at_ms": None,
            }
        held: dict[str, list[int]] = {name: [] for name in reading.members}
        held.setdefault(self.instance, [])
        for partition, lease in sorted(reading.owners.items()):
            held.setdefault(lease.holder, []).append(partition)
        instances = [
            {
                "id": name,
                "this": name == self.instance,
                "partitions": partitions,
                "lease_age_s": _age(reading.members.get(name), reading.taken_at_s),
                "lease_ages_s": {
                    str(p): _age(reading.owners[p], reading.taken_at_s) for p in partitions
                },
            }
            for name, partitions in sorted(held.items())
        ]
        partitions = []
        for partition in range(self.nats.partitions):
            owner = reading.owners.get(partition)
            since = self._unowned_since.get(partition)
            consumer = reading.consumers.get(partition)
            partitions.append(
                {
                    "partition": partition,
                    "owner": owner.holder if owner else None,
                    "lease_age_s": _age(owner, reading.taken_at_s),
                    "unowned_for_s": round(now_mono - since, 1) if since is not None else None,
                    "lag": _lag(consumer),
                    "pending": consumer.num_pending if consumer else None,
                    "ack_pending": consumer.num_ack_pending if consumer else None,
                    "redelivered": consumer.num_redelivered if consumer else None,
                }
            )
        return {
            **base,
            "instances": instances,
            "partitions": partitions,
            "stream": reading.stream,
            "read_at_ms": int(reading.taken_at_s * 1000),
            "read_age_s": round(now_s - reading.taken_at_s, 1),
        }

    def metrics(self) -> dict[str, Value]:
        """The cluster's families of /metrics (none on transport "mqtt")."""
        reading = self.reading
        if not self.clustered:
            return {}
        counted: dict[str, Value] = {}
        if self.checkpoints is not None:
            counted |= self.checkpoints.metrics()
        if reading is None:
            return counted
        owned = sum(1 for lease in reading.owners.values() if lease.holder == self.instance)
        return counted | {
            "cluster_instances": len(reading.members | {self.instance: Lease("", 0.0)}),
            "cluster_partitions_owned": owned,
            "partition_lag": {
                str(p): float(lag)
                for p, consumer in reading.consumers.items()
                if (lag := _lag(consumer)) is not None
            },
            "partition_lease_age_seconds": {
                str(p): age
                for p, lease in reading.owners.items()
                if (age := _age(lease, reading.taken_at_s)) is not None
            },
        }

    def operator_checks(self, now_ms: int) -> list[DetectionEvent]:
        """Judge the last reading once; nothing while the view cannot be read (the
        collector's own readiness says that NATS is out of reach)."""
        reading = self.reading
        if not self.clustered or reading is None or reading is self._judged or self.error:
            return []
        self._judged = reading
        unowned_limit_s = UNOWNED_AFTER_TTLS * self.nats.lease_ttl_s
        now_mono = time.monotonic()
        unowned = sorted(
            p for p, since in self._unowned_since.items() if now_mono - since > unowned_limit_s
        )
        if unowned and not self.unowned.raised:
            log.error("partitions without an owner", extra={"partitions": unowned[:50]})
        events = self.unowned.update(float(len(unowned)), now_ms)
        if self.lag is not None:
            lags = [lag for c in reading.consumers.values() if (lag := _lag(c)) is not None]
            events += self.lag.update(float(max(lags, default=0)), now_ms)
        return events


def _age(lease: Lease | None, now_s: float) -> float | None:
    return None if lease is None else round(max(0.0, now_s - lease.written_at_s), 3)


def _lag(consumer: ConsumerInfo | None) -> int | None:
    """Messages of the partition not yet acknowledged: waiting + delivered, unacknowledged."""
    if consumer is None:
        return None
    return (consumer.num_pending or 0) + (consumer.num_ack_pending or 0)
