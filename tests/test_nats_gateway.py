"""What a device's PUBACK means on a NATS cluster's MQTT gateway, proved on real servers.

The gateway stores a QoS 1 publish in its own stream (``$MQTT_msgs``) and sends the PUBACK
only after that store succeeded; a stream of ours capturing the same subjects is fed by
plain delivery, and the PUBACK does not wait for it. So the collector's partitions are
durable consumers on the gateway's stream (docs/cluster.md, "Transport (NATS)").
"""

from __future__ import annotations

import nats
from nats.js.api import DiscardPolicy, StreamConfig

from collector.config import NatsSettings
from collector.natsstream import consumer_name, provision
from collector.natssubjects import MQTT_MESSAGES_STREAM, PARTITION_ROOT
from fieldtools.natscluster import NatsCluster
from tests.natsfixtures import Device, run_async, wait_true

PARTITIONS = 8


def _settings(cluster: NatsCluster) -> NatsSettings:
    return NatsSettings(url=cluster.urls, partitions=PARTITIONS, stream_replicas=cluster.replicas)


async def _provision(cluster: NatsCluster) -> None:
    nc = await nats.connect(cluster.urls.split(","))
    await provision(nc.jetstream(), _settings(cluster))
    await nc.close()


async def _held(urls: str, stream: str) -> int:
    nc = await nats.connect(urls.split(","))
    try:
        return (await nc.jetstream().stream_info(stream)).state.messages
    finally:
        await nc.close()


async def _fetch_all(urls: list[str], settings: NatsSettings) -> list[bytes]:
    """Every message the partitions' durable consumers hold, acknowledged."""
    nc = await nats.connect(urls)
    js = nc.jetstream()
    payloads: list[bytes] = []
    try:
        for partition in range(settings.partitions):
            sub = await js.pull_subscribe_bind(
                consumer_name(settings, partition), stream=MQTT_MESSAGES_STREAM
            )
            while True:
                try:
                    batch = await sub.fetch(100, timeout=0.5)
                except (nats.errors.Error, TimeoutError):  # empty, or electing a leader
                    break
                for msg in batch:
                    await msg.ack_sync()
                    payloads.append(msg.data)
    finally:
        await nc.close()
    return payloads


def test_a_puback_waits_for_the_gateway_stream_and_not_for_a_stream_of_ours(
    nats_cluster: NatsCluster,
) -> None:
    run_async(_provision(nats_cluster))

    async def add_small_stream() -> None:
        nc = await nats.connect(nats_cluster.urls.split(","))
        await nc.jetstream().add_stream(
            StreamConfig(
                name="OURS",
                subjects=[f"{PARTITION_ROOT}.>"],
                max_msgs=1,
                discard=DiscardPolicy.NEW,
                num_replicas=nats_cluster.replicas,
            )
        )
        await nc.close()

    run_async(add_small_stream())
    device = Device(nats_cluster.nodes[1].mqtt_port)
    try:
        acked = [device.publish(b'{"seq": %d}' % seq) for seq in range(5)]
    finally:
        device.close()
    assert acked == [True] * 5
    # Right after the PUBACKs: the gateway's stream holds all five, ours took one and
    # refused four, and the device was told "stored" for every one.
    assert run_async(_held(nats_cluster.urls, MQTT_MESSAGES_STREAM)) == 5
    assert run_async(_held(nats_cluster.urls, "OURS")) == 1


def test_no_puback_while_the_gateway_stream_cannot_store(nats_cluster: NatsCluster) -> None:
    run_async(_provision(nats_cluster))

    async def limit_stream(max_msgs: int) -> None:
        nc = await nats.connect(nats_cluster.urls.split(","))
        js = nc.jetstream()
        config = (await js.stream_info(MQTT_MESSAGES_STREAM)).config
        config.max_msgs = max_msgs
        await js.update_stream(config)
        await nc.close()

    run_async(limit_stream(3))
    device = Device(nats_cluster.nodes[0].mqtt_port)
    try:
        assert [device.publish(b'{"seq": %d}' % seq) for seq in range(3)] == [True] * 3
        assert not device.publish(b'{"seq": 3}', timeout_s=5)  # refused: the device keeps it
        assert run_async(_held(nats_cluster.urls, MQTT_MESSAGES_STREAM)) == 3
        # Room again: the device's own retry (paho resends an unacknowledged publish on
        # its next connection) is stored and acknowledged.
        settings = _settings(nats_cluster)
        drained: list[bytes] = []

        def all_four() -> bool:
            drained.extend(run_async(_fetch_all(nats_cluster.urls.split(","), settings)))
            return len(drained) >= 4

        assert wait_true(all_four)
        assert sorted(drained) == [b'{"seq": %d}' % seq for seq in range(4)]
        assert wait_true(lambda: device.publish(b'{"seq": 4}'))
    finally:
        device.close()


def test_acknowledged_publishes_survive_a_sigkill_of_the_stream_leader(
    nats_cluster: NatsCluster,
) -> None:
    run_async(_provision(nats_cluster))

    async def leader() -> str:
        nc = await nats.connect(nats_cluster.urls.split(","))
        info = await nc.jetstream().stream_info(MQTT_MESSAGES_STREAM)
        await nc.close()
        assert info.cluster is not None
        return str(info.cluster.leader)

    leader_name = run_async(leader())
    leader_node = next(node for node in nats_cluster.nodes if node.name == leader_name)
    device = Device(leader_node.mqtt_port)
    try:
        acked = [device.publish(b'{"seq": %d}' % seq) for seq in range(50)]
    finally:
        device.close()
    assert all(acked)
    nats_cluster.kill(leader_node)  # at once after the last PUBACK
    survivors = [node.url for node in nats_cluster.nodes if node.running]
    payloads: list[bytes] = []

    def all_fifty() -> bool:  # the survivors elect a new leader meanwhile
        payloads.extend(run_async(_fetch_all(survivors, _settings(nats_cluster))))
        return len(payloads) >= 50

    wait_true(all_fifty, timeout_s=60)
    assert sorted(payloads) == sorted(b'{"seq": %d}' % seq for seq in range(50))
