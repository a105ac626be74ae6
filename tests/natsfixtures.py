"""Fixtures for transport "nats": a real NATS cluster (nats-server with JetStream and its
MQTT gateway) on free loopback ports, and MQTT 3.1.1 devices that talk to it.

Each test gets its own cluster (its partition count is server configuration, and tests
kill nodes), stopped after the test with nothing left running.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from collector.config import InfluxSettings, Settings
from collector.configfile import load_settings
from fieldtools.localservices import InfluxDB, free_port, spawn
from fieldtools.natscluster import NatsCluster, NatsUsers
from tests.conftest import influx_rows, poll

T = TypeVar("T")

NATS_FIXTURES = frozenset({"nats_cluster", "start_nats"})
_devices = itertools.count(1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test on a NATS cluster starts processes: end-to-end, out of ``make test-fast``."""
    for item in items:
        if set(getattr(item, "fixturenames", ())) & NATS_FIXTURES:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def start_nats(tmp_path: Path) -> Iterator[Callable[..., NatsCluster]]:
    """Starts a cluster: ``start_nats(size=3, partitions=8, users=None)``."""
    clusters: list[NatsCluster] = []

    def start(*, size: int = 3, partitions: int = 8, users: NatsUsers | None = None) -> NatsCluster:
        cluster = NatsCluster(
            tmp_path / f"nats{len(clusters)}", size=size, partitions=partitions, users=users
        )
        clusters.append(cluster)
        return cluster.start()

    yield start
    for cluster in clusters:
        cluster.stop()


@pytest.fixture
def nats_cluster(start_nats: Callable[..., NatsCluster]) -> NatsCluster:
    return start_nats()


class Device:
    """A device as firmware speaks to the gateway: MQTT 3.1.1, QoS 1, a retained status
    with "offline" as its last will."""

    def __init__(
        self,
        port: int,
        *,
        family: str = "gas",
        device_id: str = "",
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.device_id = device_id or f"dev-{next(_devices)}"
        self.port = port
        self.family = family
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            # nats-server 2.14 and later refuse a client id with a "." (docs/cluster.md)
            client_id=f"{family}-{self.device_id.replace('.', '_')}",
            protocol=paho.MQTTv311,
        )
        status = self.topic("status")
        self.client.will_set(status, b'{"state":"offline"}', qos=1, retain=True)
        if credentials is not None:
            self.client.username_pw_set(*credentials)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def topic(self, kind: str) -> str:
        return f"smartunit/v1/{self.family}/{self.device_id}/{kind}"

    def publish(
        self, payload: bytes, *, kind: str = "data", retain: bool = False, timeout_s: float = 10
    ) -> bool:
        """Publish at QoS 1; True once the PUBACK came back within the time."""
        info = self.client.publish(self.topic(kind), payload, qos=1, retain=retain)
        try:
            info.wait_for_publish(timeout_s)
        except (RuntimeError, ValueError):
            return False
        return info.is_published()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def wait_true(check: Callable[[], bool], timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check() and time.monotonic() < deadline:
        time.sleep(0.1)
    return check()


def nats_collector_settings(
    cluster: NatsCluster,
    *,
    influx_url: str,
    database: str,
    data_dir: Path,
    client_id: str = "",
    **nats: Any,
) -> Settings:
    """A collector on ``cluster`` (transport "nats"), storing into ``database``."""
    env = {
        **os.environ,
        "SMARTUNIT_TRANSPORT": "nats",
        "SMARTUNIT_MQTT_URL": cluster.mqtt_url,
        "SMARTUNIT_NATS_URL": cluster.urls,
        "SMARTUNIT_INFLUX_URL": influx_url,
        "SMARTUNIT_INFLUX_DB": database,
        "SMARTUNIT_DATA_DIR": str(data_dir),
        "SMARTUNIT_HTTP_PORT": str(free_port()),
    }
    settings = load_settings(None, env=env)
    return settings.model_copy(
        update={
            "mqtt": settings.mqtt.model_copy(
                update={"client_id": client_id or f"collector-{database}"}
            ),
            "nats": settings.nats.model_copy(update={"partitions": cluster.partitions, **nats}),
            "ingest": settings.ingest.model_copy(update={"stats_interval_s": 1.0}),
        }
    )


@pytest.fixture
def nats_settings(
    nats_cluster: NatsCluster, influxdb: Any, database: str, tmp_path: Path
) -> Callable[..., Settings]:
    """Settings of a collector on ``nats_cluster`` storing into the test's database; a
    ``name`` gives it a data dir and client id of its own (several collectors in a test)."""

    def build(name: str = "", **nats: Any) -> Settings:
        return nats_collector_settings(
            nats_cluster,
            influx_url=influxdb.url,
            database=database,
            data_dir=tmp_path / (name or "data"),
            client_id=f"{name}-{database}" if name else "",
            **nats,
        )

    return build


def reading(seq: int) -> bytes:
    """A camera reading numbered ``seq``, a minute old."""
    return json.dumps({"ts": time.time() - 60 + seq / 10, "seq": seq, "people": seq}).encode()


def spawn_nats_collector(
    name: str,
    cluster: NatsCluster,
    *,
    node: int,
    influxdb: InfluxDB,
    database: str,
    directory: Path,
    config: str = "",
    user: str = "",
) -> tuple[str, subprocess.Popen[bytes]]:
    """A collector process on transport "nats", its MQTT session on node ``node``, its
    files in ``directory``; ``config`` is the rest of its TOML after ``[nats]``'s
    partition count; ``user``: signed in as that user of the cluster's. Returns its
    client id and the process."""
    client_id = f"{name}-{database}"
    config_file = directory / f"{name}.toml"
    config_file.write_text(
        f'transport = "nats"\n[mqtt]\nclient_id = "{client_id}"\n'
        f"[nats]\npartitions = {cluster.partitions}\n{config}"
    )
    env = {
        **os.environ,
        "SMARTUNIT_MQTT_URL": (
            cluster.mqtt_url_for(cluster.nodes[node], user)
            if user
            else cluster.nodes[node].mqtt_url
        ),
        "SMARTUNIT_NATS_URL": cluster.urls_for(user) if user else cluster.urls,
        "SMARTUNIT_INFLUX_URL": influxdb.url,
        "SMARTUNIT_INFLUX_DB": database,
        "SMARTUNIT_DATA_DIR": str(directory / name),
        "SMARTUNIT_HTTP_PORT": str(free_port()),
    }
    command = [sys.executable, "-m", "collector.cli", "run", "--config", str(config_file)]
    return client_id, spawn(command, env=env, log_path=directory / f"{name}.log")


class Publishing:
    """Devices publishing in a thread, one round every ``period_s`` until stopped; a
    subclass says what a round (numbered ``seq``) publishes."""

    def __init__(self, devices: list[Device], *, period_s: float) -> None:
        self.devices = devices
        self.period_s = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def publish_round(self, seq: int) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        seq = 0
        while not self._stop.is_set():
            self.publish_round(seq)
            seq += 1
            time.sleep(self.period_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)
        for device in self.devices:
            device.close()


class Load(Publishing):
    """Camera devices publishing numbered readings in turn at QoS 1, on every node of the
    cluster; what each got a PUBACK for is recorded."""

    def __init__(self, cluster: NatsCluster, devices: int) -> None:
        ids = [f"load-{index}" for index in range(devices)]
        self.acked: dict[str, set[int]] = {device_id: set() for device_id in ids}
        nodes = cluster.nodes
        super().__init__(
            [
                Device(nodes[index % len(nodes)].mqtt_port, family="camera", device_id=device_id)
                for index, device_id in enumerate(ids)
            ],
            period_s=0.05,
        )

    def publish_round(self, seq: int) -> None:
        for device in self.devices:
            if device.publish(reading(seq), timeout_s=2):
                self.acked[device.device_id].add(seq)

    def count(self) -> int:
        return sum(len(seqs) for seqs in self.acked.values())


def assert_every_acknowledged_reading_stored(load: Load, influx: InfluxSettings) -> None:
    def stored() -> dict[str, set[int]]:
        rows = influx_rows(influx, 'SELECT "seq" FROM "camera" GROUP BY "device"')
        found: dict[str, set[int]] = {}
        for row in rows:
            found.setdefault(row["device"], set()).add(int(row["seq"]))
        return found

    found = poll(
        stored,
        lambda got: all(seqs <= got.get(device, set()) for device, seqs in load.acked.items()),
        120,
    )
    for device, seqs in load.acked.items():
        missing = sorted(seqs - found.get(device, set()))
        assert not missing, f"{device}: {len(missing)} acknowledged readings lost: {missing[:10]}"
