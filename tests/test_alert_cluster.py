"""Collector processes sharing one PostgreSQL alert store: an instance SIGKILLed, the
database restarted; nothing decided is lost, nothing is sent twice."""

from __future__ import annotations

import http.server
import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen
from typing import Any, ClassVar

import httpx
import psycopg
import pytest

from collector.alerts.notify import EVENT_ID_HEADER
from fieldtools.demo import wait_for_collector
from fieldtools.localservices import free_port, spawn, stop_process
from tests.conftest import Publisher, collector_env
from tests.postgres import PostgresServer
from tests.test_alerts_e2e import wait_for
from tests.test_detection_e2e import PRESETS

REGISTRY = """
[units.{unit}]
kind = "chem_enterprise"
hierarchy = {{ city = "sz", district = "zjg", street = "park", community = "e", grid = "CP-01" }}
"""
DEVICES = ("gas-1", "gas-2", "gas-3", "gas-4")


class Desk(http.server.BaseHTTPRequestHandler):
    """A work-order system that takes ``delay_s`` to answer and records every event id
    it is sent, repeats included."""

    delay_s = 0.0
    arrived = 0  # requests begun
    keys: ClassVar[list[str]] = []
    messages: ClassVar[dict[str, dict[str, Any]]] = {}
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with Desk.lock:
            Desk.arrived += 1
        time.sleep(type(self).delay_s)
        with Desk.lock:
            key = self.headers[EVENT_ID_HEADER]
            Desk.keys.append(key)
            Desk.messages[key] = json.loads(body)
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass

    @classmethod
    def events(cls, kind: str) -> list[dict[str, Any]]:
        with cls.lock:
            return [m for m in cls.messages.values() if m["event"]["type"] == kind]


@pytest.fixture
def desk_url() -> Iterator[str]:
    Desk.delay_s, Desk.arrived, Desk.keys, Desk.messages = 0.0, 0, [], {}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Desk)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()


@dataclass
class Cluster:
    """Collector processes on one broker, one InfluxDB database, one alert store."""

    broker: Any
    influxdb: Any
    database: str
    store_url: str
    desk_url: str
    directory: Path
    processes: dict[str, Popen[bytes]] = field(default_factory=dict)
    http_ports: dict[str, str] = field(default_factory=dict)

    @property
    def unit(self) -> str:  # of its own: the broker's retained unit states outlive a test
        return f"plant-{self.database}"

    def start(
        self,
        name: str,
        *,
        detects: bool = True,
        red_deadline_s: float = 600.0,
        desk_timeout_s: float = 2.0,
    ) -> Popen[bytes]:
        registry = self.directory / "registry.toml"
        registry.write_text(
            REGISTRY.format(unit=self.unit)
            + "".join(f'\n[devices.{d}]\nunit = "{self.unit}"\nfamily = "chem"\n' for d in DEVICES)
        )
        config = self.directory / f"{name}.toml"
        config.write_text(
            f'[mqtt]\nclient_id = "{name}-{self.database}"\n'
            f'[registry]\npath = "{registry}"\n'
            f'[detection]\nenabled = {str(detects).lower()}\nrules = ["{PRESETS}"]\n'
            f'[alerts]\nstore = "{self.store_url}"\nclaim_lease_s = {desk_timeout_s + 1}\n'
            "verify_interval_s = 0.5\nretry_initial_s = 0.1\nretry_max_s = 0.5\n"
            f"ack_deadlines_s = {{ red = {red_deadline_s} }}\n"
            f'[[alerts.receivers]]\nname = "desk"\nurl = "{self.desk_url}"\n'
            f"timeout_s = {desk_timeout_s}\n"
            "group_incidents = false\n"
        )
        env = collector_env(self.broker, self.influxdb, self.database, self.directory / name)
        self.http_ports[name] = env["SMARTUNIT_HTTP_PORT"]
        command = [sys.executable, "-m", "collector.cli", "run", "--config", str(config)]
        process = spawn(command, env=env, log_path=self.directory / f"{name}.log")
        self.processes[name] = process
        wait_for_collector(self.broker.url, f"{name}-{self.database}")
        return process

    def log(self, name: str) -> str:
        return (self.directory / f"{name}.log").read_text()[-3000:]

    def stop(self) -> None:
        for process in self.processes.values():
            stop_process(process)

    def rows(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.store_url, connect_timeout=5) as db:
            return list(db.execute(query, params).fetchall())


@pytest.fixture
def cluster(broker, influxdb, database, desk_url, tmp_path: Path) -> Iterator[Any]:
    def make(store_url: str) -> Cluster:
        made = Cluster(broker, influxdb, database, store_url, desk_url, tmp_path)
        clusters.append(made)
        return made

    clusters: list[Cluster] = []
    yield make
    for made in clusters:
        made.stop()


def burst(publisher: Publisher, device: str, value: float) -> None:
    """Seven seconds of one reading a second, just ended: more than the gas rule's for_s."""
    start = time.time() - 7
    for i in range(7):
        publisher.publish(
            f"smartunit/v1/chem/{device}/data",
            json.dumps({"ts": start + i, "readings": {"lel_pct": value}}),
        )


def no_key_twice() -> None:
    with Desk.lock:
        repeated = {k for k in Desk.keys if Desk.keys.count(k) > 1}
    assert not repeated, f"idempotency keys sent twice: {sorted(repeated)}"


@pytest.mark.slow
def test_an_escalation_due_while_its_instance_is_dead_escalates_once_on_another(
    cluster, publisher: Publisher, pg_url: str, subscribe
) -> None:
    shared = cluster(pg_url)
    # Slow answers: the other instance looks at the outbox while a delivery is in flight.
    Desk.delay_s = 1.0
    first = shared.start("first", red_deadline_s=20.0)
    assert wait_for(lambda: shared.rows("SELECT holder FROM leases"), timeout_s=30)
    ((clock_holder,),) = shared.rows("SELECT holder FROM leases")
    assert f":{first.pid}:" in clock_holder  # the first instance runs the alert clock
    # The second judges no readings (its partitions do not hold gas-1): it only shares
    # the store, the outbox and the clock.
    shared.start("second", detects=False, red_deadline_s=20.0)
    unit_states = subscribe(f"smartunit/v1/units/{shared.unit}/alert")

    burst(publisher, "gas-1", 60.0)
    assert wait_for(lambda: Desk.events("opened"), timeout_s=30), shared.log("first")
    ((alert_id, started_ms),) = shared.rows("SELECT id, started_at_ms FROM alerts")
    time.sleep(2)  # the second instance's lane looks at the outbox a few times meanwhile
    # The unit's siren state, published by the first, is what the shared store says: the
    # second, which changed nothing, neither clears it nor puts its own stale copy back.
    states = [m.payload for m in unit_states.messages]
    assert states and all(states), f"the unit's state was cleared: {states}"
    assert json.loads(states[-1])["colour"] == "red"
    escalated = "SELECT count(*) FROM alert_events WHERE alert_id = %s AND type = 'escalated'"
    assert shared.rows(escalated, alert_id) == [(0,)], "the deadline passed before the kill"
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_ms = time.time() * 1000
    assert killed_ms < started_ms + 20_000  # the deadline passes while it is dead

    assert wait_for(lambda: Desk.events("escalated"), timeout_s=60), shared.log("second")
    ((holder,),) = shared.rows("SELECT holder FROM leases")
    assert f":{first.pid}:" not in holder  # the second instance took the clock over
    (escalation,) = Desk.events("escalated")
    assert escalation["alert"]["id"] == alert_id
    assert "grid -> community" in escalation["event"]["note"]
    levels = shared.rows(
        "SELECT note FROM alert_events WHERE alert_id = %s AND type = 'escalated'", alert_id
    )
    assert [note for (note,) in levels if "grid -> community" in note] == [
        escalation["event"]["note"]
    ]  # once

    pending = "SELECT count(*) FROM outbox WHERE status = 'pending'"
    assert wait_for(lambda: shared.rows(pending) == [(0,)], timeout_s=30)
    outbox_keys = {key for (key,) in shared.rows("SELECT event_key FROM outbox")}
    assert set(Desk.keys) == outbox_keys  # every event reached the desk
    no_key_twice()


@pytest.mark.slow
def test_postgresql_restarted_under_load_loses_no_alert_event(
    cluster, publisher: Publisher, pg_url: str, postgres: PostgresServer
) -> None:
    shared = cluster(pg_url)
    shared.start("only", desk_timeout_s=10.0)
    load = threading.Event()

    def steady_load() -> None:  # normal readings from a device all along
        while not load.is_set():
            publisher.publish(
                "smartunit/v1/chem/gas-4/data",
                json.dumps({"ts": time.time(), "readings": {"lel_pct": 2.0}}),
            )
            time.sleep(0.05)

    loader = threading.Thread(target=steady_load, daemon=True)
    loader.start()
    try:
        Desk.delay_s = 3.0  # the desk takes its time over the first event
        burst(publisher, "gas-1", 60.0)
        assert wait_for(lambda: Desk.arrived, timeout_s=30), shared.log("only")

        postgres.stop_fast()  # while the desk works on it: its answer cannot be written
        try:
            burst(publisher, "gas-2", 60.0)  # opened while the store is down
            burst(publisher, "gas-1", 5.0)  # and gas-1 recovers meanwhile
            assert wait_for(
                lambda: "alert store cannot be written" in shared.log("only"), timeout_s=30
            ), shared.log("only")
            assert wait_for(lambda: Desk.events("opened"))  # the desk took it meanwhile
        finally:
            Desk.delay_s = 0.0
            postgres.start()
        burst(publisher, "gas-3", 60.0)  # after the restart

        def opened_devices() -> set[str]:
            return {m["alert"]["device"] for m in Desk.events("opened")}

        assert wait_for(lambda: {"gas-1", "gas-2", "gas-3"} <= opened_devices(), timeout_s=60), (
            shared.log("only")
        )
        assert wait_for(lambda: Desk.events("recovered"), timeout_s=30), shared.log("only")
    finally:
        load.set()
        loader.join()

    pending = "SELECT count(*) FROM outbox WHERE status = 'pending'"
    assert wait_for(lambda: shared.rows(pending) == [(0,)], timeout_s=30)
    outbox_keys = {key for (key,) in shared.rows("SELECT event_key FROM outbox")}
    assert set(Desk.keys) == outbox_keys  # every event reached the desk
    no_key_twice()
    health = f"http://127.0.0.1:{shared.http_ports['only']}/healthz"
    assert wait_for(lambda: httpx.get(health, timeout=5).status_code == 200)  # recovered
