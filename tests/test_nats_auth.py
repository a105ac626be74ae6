"""A NATS cluster with users (``smartunit cluster-demo``, docs/cluster.md): only they
connect, to the client, MQTT and route ports, each with its rights. Real nats-servers,
InfluxDB and a collector process signed in as the collector."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import nats
import nats.errors
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from collector.config import InfluxSettings
from fieldtools.brokerauth import COLLECTOR_USER, OBSERVER_USER, SIMULATOR_USER
from fieldtools.demo import wait_for_collector
from fieldtools.localservices import InfluxDB, find_binary, free_port, spawn, stop_process
from fieldtools.natscluster import NatsCluster, NatsUsers
from tests.conftest import influx_rows, poll
from tests.natsfixtures import Device, reading, run_async, spawn_nats_collector
from tests.test_deploy_files import signs_in


def anonymous_nats_refused(url: str) -> bool:
    async def connect() -> bool:
        try:
            nc = await nats.connect(url, allow_reconnect=False, connect_timeout=5)
        except (nats.errors.Error, OSError) as exc:
            return "authorization" in str(exc).lower()
        await nc.close()
        return False

    return run_async(connect())


class Observer:
    """The read-only user watching every topic at QoS 1."""

    def __init__(self, port: int, password: str) -> None:
        self.messages: list[tuple[str, bytes | bytearray]] = []
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id="observer", protocol=paho.MQTTv311
        )
        self.client.username_pw_set(OBSERVER_USER, password)
        subscribed = threading.Event()
        self.client.on_connect = lambda c, *_: c.subscribe("smartunit/v1/#", qos=1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = lambda _c, _u, m: self.messages.append((m.topic, m.payload))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(10)

    def topics(self) -> list[str]:
        return [topic for topic, _ in self.messages]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def rogue_route(directory: Path, target_route_port: int) -> subprocess.Popen[bytes]:
    """A nats-server on this machine that tries to join the cluster as a route, without
    the route password."""
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "rogue.conf"
    conf.write_text(
        f"server_name: rogue\nlisten: 127.0.0.1:{free_port()}\n"
        f"cluster {{ name: smartunit, listen: 127.0.0.1:{free_port()}, "
        f"routes: [nats://127.0.0.1:{target_route_port}] }}\n"
    )
    return spawn([find_binary("nats-server"), "-c", str(conf)], log_path=directory / "rogue.log")


def test_a_cluster_with_users_admits_only_them_each_with_its_rights(
    start_nats: Callable[..., NatsCluster], influxdb: InfluxDB, database: str, tmp_path: Path
) -> None:
    users = NatsUsers.fresh([COLLECTOR_USER, SIMULATOR_USER, OBSERVER_USER])
    cluster = start_nats(users=users)  # three nodes: ready once their routes signed in
    password = users.passwords
    gateway = cluster.nodes[1].mqtt_port

    # nobody else: not on the MQTT gateway, not on the client port, not as a route
    assert not signs_in(gateway, None, None)
    assert not signs_in(gateway, SIMULATOR_USER, "guess")
    assert signs_in(gateway, SIMULATOR_USER, password[SIMULATOR_USER])
    assert anonymous_nats_refused(cluster.nodes[0].url)
    rogue = rogue_route(tmp_path / "rogue", cluster.nodes[0].route_port)
    try:
        assert poll(
            cluster.nodes[0].log_path.read_text,
            lambda log: "authorization violation" in log.lower(),
            30,
        )
    finally:
        stop_process(rogue)

    # the collector signs in on both ports; the observer sees its retained status
    _, collector = spawn_nats_collector(
        "auth",
        cluster,
        node=0,
        influxdb=influxdb,
        database=database,
        directory=tmp_path,
        user=COLLECTOR_USER,
    )
    observer = Observer(gateway, password[OBSERVER_USER])
    device = Device(
        gateway,
        family="camera",
        device_id="cam-signed-in",
        credentials=(SIMULATOR_USER, password[SIMULATOR_USER]),
    )
    try:
        wait_for_collector(
            cluster.mqtt_url_for(cluster.nodes[2], OBSERVER_USER), f"auth-{database}", 90
        )
        # the simulator speaks for devices: their readings are stored ...
        assert device.publish(reading(1))
        influx = InfluxSettings(url=influxdb.url, database=database)
        query = """SELECT "seq" FROM "camera" WHERE "device" = 'cam-signed-in'"""
        assert poll(lambda: influx_rows(influx, query), bool, 60)
        # ... but not for a unit's panel nor for the collector: dropped by the gateway
        device.client.publish("smartunit/v1/units/plant-1/ack", b"{}", qos=1).wait_for_publish(10)
        device.client.publish("smartunit/v1/_collector/x/status", b"{}", qos=1).wait_for_publish(10)
        assert device.publish(reading(2))  # after them, in order on one connection
        # (data topics as the servers map them into partitions)
        assert poll(
            observer.topics,
            lambda topics: sum(t.endswith("/camera/cam-signed-in/data") for t in topics) == 2,
            30,
        )
        forged = [t for t in observer.topics() if "/units/" in t or t.endswith("/x/status")]
        assert forged == []
        assert poll(lambda: [row["seq"] for row in influx_rows(influx, query)], [1, 2].__eq__, 30)
    finally:
        device.close()
        observer.close()
        stop_process(collector)
