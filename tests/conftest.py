"""Fixtures: a real Mosquitto broker and a real InfluxDB server on free loopback ports.

Both run for the whole session in pytest's temporary directory; each test gets its own
database (and its own MQTT client ids), so tests do not see each other's data.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from collector.app import Collector
from collector.config import InfluxSettings, Settings
from collector.configfile import (
    API_TOKEN_ENV,
    CONFIG_ENV,
    ENV_OVERRIDES,
    WEBHOOK_SECRET_ENV,
    WEBHOOK_URL_ENV,
    load_settings,
)
from collector.influx import query_sync, rows
from collector.registry import RegistryHolder
from fieldtools.demo import wait_for_collector
from fieldtools.localservices import InfluxDB, Mosquitto, free_port
from tests.postgres import PostgresServer, require_postgres
from tests.receivers import receiver_url  # noqa: F401 - a fixture for every test

pytest_plugins = ["tests.natsfixtures"]

T = TypeVar("T")

# A shell that ran the demo's `export SMARTUNIT_...` line would point every configuration
# the tests load, and every collector they start, at the demo's files and servers.
for _name in (*ENV_OVERRIDES, CONFIG_ENV, API_TOKEN_ENV, WEBHOOK_URL_ENV, WEBHOOK_SECRET_ENV):
    os.environ.pop(_name, None)

_ids = itertools.count(1)

# Every fixture that stands for a real server, a collector, or the OS beneath them. A test
# whose fixture closure reaches any of them is end-to-end: the mark follows from what the test
# uses, so a new end-to-end test cannot land in the fast run by someone forgetting a mark.
SERVER_FIXTURES = frozenset(
    {
        "broker",
        "influxdb",
        "database",
        "make_settings",
        "run_collector",
        "publisher",
        "subscribe",
        "small_filesystem",
        "postgres",
        "pg_url",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks ``e2e`` each test that starts processes: ``make test-fast`` runs the rest."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & SERVER_FIXTURES or item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    server = Mosquitto(tmp_path_factory.mktemp("mosquitto")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the session (tests/postgres.py); each test that needs a
    database of its own takes ``pg_url``."""
    require_postgres()
    server = PostgresServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def pg_url(postgres: PostgresServer) -> str:
    """The URL of a fresh database on the session's PostgreSQL server."""
    return postgres.new_database()


@pytest.fixture(scope="session")
def influxdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxDB]:
    server = InfluxDB(tmp_path_factory.mktemp("influxdb")).start()
    yield server
    server.stop()


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """Mounts a tmpfs of the given size in bytes (needs root, as CI runs); skips if it can't."""
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        where = tmp_path / f"fs{len(mounted)}"
        where.mkdir()
        command = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            error = done.stderr.strip() if done.returncode else ""
        except OSError as exc:
            error = str(exc)
        if error:
            pytest.skip(f"cannot mount a small tmpfs here (needs root): {error}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill_disk(directory: Path, *, leave: int) -> Path:
    """A ballast file that leaves about ``leave`` bytes free on ``directory``'s filesystem."""
    ballast = directory / "ballast"
    free = os.statvfs(directory).f_bavail * os.statvfs(directory).f_frsize
    with ballast.open("ab") as handle:
        handle.write(b"\0" * max(free - leave, 0))
    return ballast


@pytest.fixture
def database() -> str:
    return f"test_{next(_ids)}_{int(time.time() * 1000) % 10**8}"


def poll(
    fetch: Callable[[], T],
    done: Callable[[T], object],
    timeout_s: float = 20.0,
    every_s: float = 0.1,
) -> T:
    """Fetch until ``done`` holds for what came back, or the time is up; the last fetch."""
    deadline = time.monotonic() + timeout_s
    while not done(found := fetch()) and time.monotonic() < deadline:
        time.sleep(every_s)
    return found


def collector_env(
    broker: Mosquitto, influxdb: InfluxDB, database: str, data_dir: Path, **extra: str
) -> dict[str, str]:
    """The environment of a collector run as its own process (``smartunit run``)."""
    return {
        **os.environ,
        "SMARTUNIT_MQTT_URL": broker.url,
        "SMARTUNIT_INFLUX_URL": influxdb.url,
        "SMARTUNIT_INFLUX_DB": database,
        "SMARTUNIT_DATA_DIR": str(data_dir),
        "SMARTUNIT_HTTP_PORT": str(free_port()),
        **extra,
    }


@pytest.fixture
def make_settings(
    broker: Mosquitto, influxdb: InfluxDB, database: str, tmp_path: Path
) -> Callable[..., Settings]:
    """Settings pointing at the test servers; keyword sections override the file's."""

    def build(registry: Path | None = None, **sections: dict[str, Any]) -> Settings:
        settings = load_settings(
            None, env=collector_env(broker, influxdb, database, tmp_path / "data")
        )
        updates: dict[str, Any] = {}
        mqtt = {"client_id": f"collector-{database}", **sections.pop("mqtt", {})}
        updates["mqtt"] = settings.mqtt.model_copy(update=mqtt)
        updates["ingest"] = settings.ingest.model_copy(
            update={"stats_interval_s": 1.0, **sections.pop("ingest", {})}
        )
        updates["registry"] = settings.registry.model_copy(
            update={"path": registry, "reload_interval_s": 0.1, **sections.pop("registry", {})}
        )
        for name, values in sections.items():
            updates[name] = getattr(settings, name).model_copy(update=values)
        return settings.model_copy(update=updates)

    return build


class CollectorThread:
    """A Collector running in its own thread and event loop, as in production."""

    def __init__(self, settings: Settings) -> None:
        self.holder = RegistryHolder.open(settings.registry)
        self.settings = settings
        self.collector: Collector | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        async def run() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self.collector = Collector(self.settings, self.holder)
            await self.collector.run(self._stop)

        try:
            asyncio.run(run())
        except BaseException as exc:
            self._error = exc

    def start(self) -> CollectorThread:
        self._thread.start()
        mqtt = self.settings.mqtt
        wait_for_collector(mqtt.url, mqtt.client_id, tls=mqtt.tls)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        assert not self._thread.is_alive(), "collector did not stop"
        if self._error is not None:
            raise self._error

    @property
    def stats(self) -> Any:
        assert self.collector is not None
        return self.collector.stats

    def wait_received(self, count: int, timeout_s: float = 30.0) -> None:
        """Wait until the collector has taken ``count`` messages and written what it could."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            collector = self.collector
            if (
                collector is not None
                and collector.stats.messages_received >= count
                and collector.source.backlog == 0
                and collector.writer.queue.empty()
                # a batch still being filled or written is not in the queue: its readings
                # are accepted but not yet stored
                and collector.stats.readings_stored >= collector.stats.readings_accepted
            ):
                time.sleep(self.settings.ingest.flush_interval_ms / 1000 + 0.3)
                return
            time.sleep(0.05)
        received = self.collector.stats.messages_received if self.collector else 0
        raise AssertionError(f"collector received {received} of {count} messages")


@pytest.fixture
def run_collector() -> Iterator[Callable[[Settings], CollectorThread]]:
    running: list[CollectorThread] = []

    def start(settings: Settings) -> CollectorThread:
        thread = CollectorThread(settings).start()
        running.append(thread)
        return thread

    yield start
    for thread in running:
        if thread._thread.is_alive():
            thread.stop()


class Publisher:
    """A plain MQTT client for tests: publishes at QoS 1 and waits for the broker's acks."""

    def __init__(self, broker: Mosquitto, client_id: str) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        self.count = 0

    def publish(
        self, topic: str, payload: bytes | str, *, qos: int = 1, retain: bool = False
    ) -> None:
        if isinstance(payload, str):
            payload = payload.encode()
        self.client.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(10)
        self.count += 1

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher(broker: Mosquitto, database: str) -> Iterator[Publisher]:
    pub = Publisher(broker, f"pub-{database}")
    yield pub
    pub.close()


class Subscriber:
    """Collects every message on a topic filter."""

    def __init__(self, broker: Mosquitto, topic: str, client_id: str) -> None:
        self.messages: list[paho.MQTTMessage] = []
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = lambda _c, _u, msg: self.messages.append(msg)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        assert self._subscribed.wait(10)

    def wait_for(self, count: int, timeout_s: float = 20.0) -> list[paho.MQTTMessage]:
        deadline = time.monotonic() + timeout_s
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscribe(broker: Mosquitto, database: str) -> Iterator[Callable[[str], Subscriber]]:
    subs: list[Subscriber] = []

    def make(topic: str) -> Subscriber:
        sub = Subscriber(broker, topic, f"sub-{database}-{len(subs)}")
        subs.append(sub)
        return sub

    yield make
    for sub in subs:
        sub.close()


def influx_rows(settings: InfluxSettings, influxql: str) -> list[dict[str, Any]]:
    """All rows of a query, each with its series' tags merged in."""
    out = []
    for series in query_sync(settings, influxql):
        for row in rows(series):
            out.append({**series.get("tags", {}), **row, "_measurement": series["name"]})
    return out
