"""The gateway's message stream and the partitions' durable consumers on it (transport
``nats``): created as needed, idempotently, and the servers' partition mapping checked
against ``nats.partitions`` before anything is read (docs/cluster.md)."""

from __future__ import annotations

import contextlib
import logging

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from collector.config import NatsSettings
from collector.natssubjects import (
    MQTT_MESSAGES_PREFIX,
    MQTT_MESSAGES_STREAM,
    PARTITION_ROOT,
    PROBE_FAMILY,
    partition_filter,
    partition_of,
)

log = logging.getLogger(__name__)

PROBES = 16  # device tokens published to check the servers' mapping against ours


class PartitionMappingError(Exception):
    """The servers' subject mapping does not put devices where ``nats.partitions`` says."""


async def provision(js: JetStreamContext, settings: NatsSettings) -> None:
    """The gateway's message stream (created as the gateway would, if no device connected
    yet) with our bound, and one durable consumer per partition. Idempotent."""
    try:
        info = await js.stream_info(MQTT_MESSAGES_STREAM)
    except nats.js.errors.NotFoundError:
        await js.add_stream(
            StreamConfig(
                name=MQTT_MESSAGES_STREAM,
                subjects=[f"{MQTT_MESSAGES_PREFIX}>"],
                retention=RetentionPolicy.INTEREST,
                storage=StorageType.FILE,
                num_replicas=settings.stream_replicas,
                max_bytes=settings.stream_max_bytes,
                discard=DiscardPolicy.NEW,
            )
        )
    else:
        config = info.config
        if config.retention != RetentionPolicy.INTEREST:
            raise PartitionMappingError(f"{MQTT_MESSAGES_STREAM} is not interest-retained")
        if (config.num_replicas or 1) < settings.stream_replicas:
            log.warning(
                "the MQTT gateway's stream has fewer replicas than nats.stream_replicas: "
                "set stream_replicas in the servers' mqtt block",
                extra={"replicas": config.num_replicas, "wanted": settings.stream_replicas},
            )
        if config.max_bytes != settings.stream_max_bytes or config.discard != DiscardPolicy.NEW:
            config.max_bytes, config.discard = settings.stream_max_bytes, DiscardPolicy.NEW
            await js.update_stream(config)
    for partition in range(settings.partitions):
        with contextlib.suppress(nats.js.errors.BadRequestError):  # exists, configured
            await js.add_consumer(
                MQTT_MESSAGES_STREAM,
                ConsumerConfig(
                    durable_name=consumer_name(settings, partition),
                    filter_subject=partition_filter(partition),
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.ALL,
                    ack_wait=settings.ack_wait_s,
                    max_deliver=-1,  # never given up: a reading is stored or stays
                ),
            )


def consumer_name(settings: NatsSettings, partition: int) -> str:
    return f"{settings.consumer_prefix}-p{partition}"


async def check_partitioning(nc: NatsClient, partitions: int) -> None:
    """Publish probe subjects (core NATS, never stored) and see where the servers' mapping
    puts them: a count other than ours would leave partitions without a consumer, and the
    gateway's stream drops what no consumer wants."""
    sub = await nc.subscribe(f"{PARTITION_ROOT}.*.{PROBE_FAMILY}.*.data")
    try:
        tokens = [f"probe{index}-{nc.client_id}" for index in range(PROBES)]
        for token in tokens:
            await nc.publish(f"smartunit.v1.{PROBE_FAMILY}.{token}.data", b"")
        await nc.flush()
        seen: dict[str, int] = {}
        with contextlib.suppress(nats.errors.TimeoutError):
            while len(seen) < len(tokens):
                msg = await sub.next_msg(timeout=5)
                parts = msg.subject.split(".")
                seen[parts[-2]] = int(parts[3])
    finally:
        await sub.unsubscribe()
    if not seen:
        raise PartitionMappingError(
            "the NATS servers map no data subjects into partitions: add the mappings of "
            "docs/cluster.md to every server's configuration"
        )
    wrong = [token for token in tokens if seen.get(token) != partition_of(token, partitions)]
    if wrong:
        raise PartitionMappingError(
            f"the NATS servers' partition() mapping does not split into nats.partitions = "
            f"{partitions} partitions: make both the same"
        )
