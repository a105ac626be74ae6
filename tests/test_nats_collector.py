"""Transport "nats" end to end: MQTT 3.1.1 devices on a real NATS cluster's gateway, the
collector reading the JetStream partitions, a real InfluxDB: every reading stored."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import nats
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from collector.config import NatsSettings, Settings
from collector.natsstream import PartitionMappingError, check_partitioning, consumer_name
from collector.natssubjects import partition_of, subject_to_topic
from fieldtools.localservices import InfluxDB
from fieldtools.natscluster import NatsCluster
from tests.conftest import CollectorThread, influx_rows, poll
from tests.natsfixtures import Device, nats_collector_settings, reading, run_async

PER_DEVICE = 40


def stored_seqs(collector: CollectorThread, device: str) -> list[int]:
    rows = influx_rows(
        collector.settings.influx, f"""SELECT "seq" FROM "camera" WHERE "device" = '{device}'"""
    )
    return sorted(int(row["seq"]) for row in rows)


@pytest.fixture
def nats_collector(
    nats_settings: Callable[..., Settings],
    run_collector: Callable[..., CollectorThread],
) -> CollectorThread:
    settings = nats_settings()
    return run_collector(settings)


def test_every_reading_from_devices_on_every_node_is_stored(
    nats_cluster: NatsCluster, nats_collector: CollectorThread
) -> None:
    devices = [
        Device(node.mqtt_port, family="camera", device_id=f"cam-{index}")
        for index, node in enumerate(nats_cluster.nodes)
    ]
    try:
        for seq in range(PER_DEVICE):
            for device in devices:
                assert device.publish(reading(seq))
    finally:
        for device in devices:
            device.close()
    for device in devices:
        seqs = poll(
            lambda d=device: stored_seqs(nats_collector, d.device_id),  # type: ignore[misc]
            lambda found: len(found) >= PER_DEVICE,
            30,
        )
        assert seqs == list(range(PER_DEVICE)), device.device_id
    # every message acknowledged to JetStream once stored: nothing waits in the stream
    assert poll(lambda: _pending(nats_cluster), lambda pending: pending == 0) == 0


async def _pending_async(cluster: NatsCluster) -> int:
    """Data messages the partitions' consumers have not had acknowledged."""
    nc = await nats.connect(cluster.urls.split(","))
    settings = NatsSettings(partitions=cluster.partitions)
    try:
        js = nc.jetstream()
        total = 0
        for partition in range(cluster.partitions):
            info = await js.consumer_info("$MQTT_msgs", consumer_name(settings, partition))
            total += info.num_pending + info.num_ack_pending
        return total
    finally:
        await nc.close()


def _pending(cluster: NatsCluster) -> int:
    return run_async(_pending_async(cluster))


class GatewaySubscriber:
    """An MQTT 3.1.1 client of the gateway collecting what arrives on a topic filter."""

    def __init__(self, cluster: NatsCluster, topic: str) -> None:
        self.messages: list[paho.MQTTMessage] = []
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"sub-{time.monotonic_ns()}",
            protocol=paho.MQTTv311,
        )
        subscribed: list[bool] = []
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: subscribed.append(True)
        self.client.on_message = lambda _c, _u, msg: self.messages.append(msg)
        self.client.connect("127.0.0.1", cluster.nodes[-1].mqtt_port)
        self.client.loop_start()
        assert poll(lambda: subscribed, bool, 10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_bad_input_is_quarantined_and_costs_no_valid_reading(
    nats_cluster: NatsCluster, nats_collector: CollectorThread
) -> None:
    quarantine = GatewaySubscriber(nats_cluster, "smartunit/v1/_rejected/#")
    device = Device(nats_cluster.nodes[0].mqtt_port, family="camera", device_id="cam-bad")
    try:
        assert device.publish(b"{not json")
        assert device.publish(json.dumps({"ts": time.time(), "seq": 1, "people": -3}).encode())
        assert device.publish(reading(2))
        assert device.publish(b'{"state": "sleeping"}', kind="status", retain=True)
    finally:
        device.close()
    expected = {"bad_json": 1, "out_of_range": 1, "bad_status": 1}
    rejections = poll(
        lambda: {r: nats_collector.stats.rejections[r] for r in expected},
        expected.__eq__,
    )
    assert rejections == expected
    assert poll(lambda: stored_seqs(nats_collector, "cam-bad"), bool) == [2]
    copies = poll(lambda: list(quarantine.messages), lambda found: len(found) >= 3)
    quarantine.close()
    assert {m.topic.split("/")[3] for m in copies} == {"camera"}
    assert len(copies) == 3


def test_a_device_status_and_its_last_will_are_stored(
    nats_cluster: NatsCluster, nats_collector: CollectorThread
) -> None:
    device = Device(nats_cluster.nodes[1].mqtt_port, family="camera", device_id="cam-will")
    assert device.publish(b'{"state": "online"}', kind="status", retain=True)
    device.client.loop_stop()
    device.client.socket().close()  # gone without a DISCONNECT: the gateway sends the will
    query = """SELECT * FROM "device_status" WHERE "device" = 'cam-will'"""
    rows = poll(
        lambda: influx_rows(nats_collector.settings.influx, query), lambda r: len(r) >= 2, 60
    )
    assert [row["state"] for row in rows] == ["online", "offline"]


def test_readings_published_while_the_collector_is_away_are_stored_on_its_return(
    nats_cluster: NatsCluster,
    nats_settings: Callable[..., Settings],
    run_collector: Callable[..., CollectorThread],
) -> None:
    settings = nats_settings()
    first = run_collector(settings)  # creates the partitions' durable consumers
    first.stop()
    device = Device(nats_cluster.nodes[2].mqtt_port, family="camera", device_id="cam-away")
    try:
        assert all(device.publish(reading(seq)) for seq in range(PER_DEVICE))
    finally:
        device.close()
    back = run_collector(settings)
    seqs = poll(lambda: stored_seqs(back, "cam-away"), lambda s: len(s) >= PER_DEVICE, 30)
    assert seqs == list(range(PER_DEVICE))


def test_a_message_is_acknowledged_to_jetstream_only_once_stored(
    nats_cluster: NatsCluster,
    nats_settings: Callable[..., Settings],
    influxdb: InfluxDB,
    database: str,
    tmp_path: Path,
    run_collector: Callable[..., CollectorThread],
) -> None:
    """InfluxDB unreachable and no spool: the collector holds the readings, acknowledges
    nothing and keeps them claimed past ack_wait (no redelivery to itself); a collector
    that can store them gets every one again."""
    unreachable = nats_collector_settings(
        nats_cluster,
        influx_url="http://127.0.0.1:9",
        database=database,
        data_dir=tmp_path / "data",
    )
    unreachable = unreachable.model_copy(
        update={
            "ingest": unreachable.ingest.model_copy(
                update={"spool": False, "shutdown_flush_s": 1.0}
            ),
            "influx": unreachable.influx.model_copy(update={"timeout_s": 1.0}),
            "nats": unreachable.nats.model_copy(update={"ack_wait_s": 3.0}),
        }
    )
    stuck = run_collector(unreachable)
    device = Device(nats_cluster.nodes[0].mqtt_port, family="camera", device_id="cam-held")
    try:
        assert all(device.publish(reading(seq)) for seq in range(PER_DEVICE))
    finally:
        device.close()
    assert poll(lambda: stuck.stats.messages_received, PER_DEVICE.__le__) >= PER_DEVICE
    time.sleep(3 * 3.0)  # three times ack_wait: a wrong acknowledgement or redelivery shows
    assert _pending(nats_cluster) == PER_DEVICE
    assert stuck.collector is not None
    assert stuck.collector.source.redelivered == 0  # type: ignore[attr-defined]
    assert stuck.stats.messages_received == PER_DEVICE + 1  # + its own online status
    stuck.stop()
    settings = nats_collector_settings(
        nats_cluster, influx_url=influxdb.url, database=database, data_dir=tmp_path / "data2"
    )
    back = run_collector(settings)
    seqs = poll(lambda: stored_seqs(back, "cam-held"), lambda s: len(s) >= PER_DEVICE, 60)
    assert seqs == list(range(PER_DEVICE))
    assert poll(lambda: _pending(nats_cluster), lambda pending: pending == 0) == 0


def test_a_partition_count_other_than_the_servers_is_refused_at_start(
    start_nats: Callable[..., NatsCluster],
) -> None:
    cluster = start_nats(size=1, partitions=8)

    async def check(partitions: int) -> None:
        nc = await nats.connect(cluster.urls)
        try:
            await check_partitioning(nc, partitions)
        finally:
            await nc.close()

    run_async(check(8))
    with pytest.raises(PartitionMappingError, match=r"nats\.partitions = 4"):
        run_async(check(4))


def test_partitions_follow_the_servers_hash_and_dots_come_back() -> None:
    assert subject_to_topic("gas.d//1.data") == "gas/d.1/data"
    assert subject_to_topic("a./.b") == "a//b"
    assert partition_of("a", 1 << 32) == 0xE40C292C  # FNV-1a 32 of "a", as Go's fnv.New32a
    assert NatsSettings(partitions=64).partitions == 64


def test_a_device_id_with_a_dot(nats_cluster: NatsCluster, nats_collector: CollectorThread) -> None:
    """nats-server 2.10 and later carry ``.`` in a topic level as ``//``: the collector
    stores the device under its own id. 2.9 refuses the topic: no PUBACK, so the device
    keeps the reading (docs/cluster.md)."""
    device = Device(nats_cluster.nodes[0].mqtt_port, family="camera", device_id="cam.7:a")
    try:
        if nats_cluster.version() < (2, 10):
            assert not device.publish(reading(1), timeout_s=3)
            return
        assert all(device.publish(reading(seq)) for seq in range(5))
    finally:
        device.close()
    assert poll(lambda: stored_seqs(nats_collector, "cam.7:a"), lambda s: len(s) >= 5) == [
        0,
        1,
        2,
        3,
        4,
    ]
