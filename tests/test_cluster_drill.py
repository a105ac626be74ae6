"""The cluster's acceptance drill: three collector processes on a three-node NATS cluster,
one PostgreSQL alert store, one InfluxDB, one webhook receiver, devices publishing all
along. One collector is SIGKILLed while a level-2 gas alarm (GB/T 50493 presets) comes
from a device of one of its partitions.

Asserted: its partitions are owned again within 30 s; no acknowledged reading is lost (by
``seq`` and by points); the gas alarm opens exactly one alert; every alert event reaches
the receiver, and no idempotency key arrives twice.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
import psycopg
import pytest

from collector.config import InfluxSettings
from collector.natscheckpoints import BUCKET as CHECKPOINTS
from collector.natssubjects import partition_of
from fieldtools.localservices import InfluxDB, stop_process
from fieldtools.natscluster import NatsCluster
from tests.conftest import influx_rows, poll
from tests.natsfixtures import (
    Device,
    Load,
    Publishing,
    assert_every_acknowledged_reading_stored,
    run_async,
    spawn_nats_collector,
)
from tests.receivers import WorkOrders, serve
from tests.test_detection_e2e import PRESETS
from tests.test_nats_ownership import kill_and_await_takeover, shared_out

PARTITIONS = 8
GAS_DEVICES = [f"gas-{index}" for index in range(24)]  # every partition has some
GAS_RULE = "combustible-gas"  # level 2 (red) at 50 % LEL
REGISTRY = """
[units.{unit}]
kind = "chem_enterprise"
hierarchy = {{ city = "sz", district = "zjg", street = "park", community = "e", grid = "CP-01" }}
"""


def checkpoint_version(cluster: NatsCluster, partition: int) -> str:
    """An id of the partition's detector checkpoint that changes with every write."""

    async def read() -> str:
        nc = await nats.connect(cluster.urls.split(","))
        try:
            store = await nc.jetstream().object_store(CHECKPOINTS)
            return str((await store.get_info(f"p{partition}")).nuid)
        except nats.js.errors.ObjectNotFoundError:
            return ""
        finally:
            await nc.close()

    return run_async(read())


def registry_text(unit: str) -> str:
    devices = "".join(f'\n[devices.{d}]\nunit = "{unit}"\nfamily = "chem"\n' for d in GAS_DEVICES)
    return REGISTRY.format(unit=unit) + devices


class GasLeak(Publishing):
    """A gas detector that reports 2 % LEL, then ``leak`` % LEL once ``leaking`` is set,
    one reading every half second, timestamped as it is sent; what was acknowledged is
    kept by ``seq``."""

    def __init__(self, port: int, device_id: str, *, leak: float = 60.0) -> None:
        self.device = Device(port, family="chem", device_id=device_id)
        self.leak = leak
        self.leaking = threading.Event()
        self.acked: set[int] = set()
        super().__init__([self.device], period_s=0.5)

    def publish_round(self, seq: int) -> None:
        value = self.leak if self.leaking.is_set() else 2.0
        body = {"ts": time.time(), "seq": seq, "readings": {"lel_pct": value}}
        if self.device.publish(json.dumps(body).encode(), timeout_s=2):
            self.acked.add(seq)


def start_collector(
    name: str,
    cluster: NatsCluster,
    *,
    node: int,
    influxdb: InfluxDB,
    database: str,
    store_url: str,
    receiver_url: str,
    directory: Path,
) -> tuple[str, subprocess.Popen[bytes]]:
    registry = directory / "registry.toml"
    return spawn_nats_collector(
        f"drill-{name}",
        cluster,
        node=node,
        influxdb=influxdb,
        database=database,
        directory=directory,
        config="ack_wait_s = 10\n"
        f'[registry]\npath = "{registry}"\n'
        f'[detection]\nrules = ["{PRESETS}"]\n'
        f'[alerts]\nstore = "{store_url}"\nclaim_lease_s = 5\n'
        "verify_interval_s = 0.5\nretry_initial_s = 0.1\nretry_max_s = 0.5\n"
        f'[[alerts.receivers]]\nname = "desk"\nurl = "{receiver_url}"\ntimeout_s = 2\n'
        "group_incidents = false\n",
    )


def assert_stored_once(influx: InfluxSettings, leak: GasLeak) -> None:
    """Every reading the device got a PUBACK for is one point, by seq."""
    device = leak.device.device_id
    query = f'SELECT "seq" FROM "chem" WHERE "device" = \'{device}\''
    found = poll(lambda: influx_rows(influx, query), lambda rows: len(rows) >= len(leak.acked), 60)
    seqs = [int(row["seq"]) for row in found]
    assert not leak.acked - set(seqs), f"{device}: acknowledged readings lost"
    assert len(seqs) == len(set(seqs)), f"{device}: a reading stored as two points"


def store_rows(url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, connect_timeout=5) as db:
        return list(db.execute(query, params).fetchall())


@pytest.mark.slow
def test_a_collector_killed_during_a_gas_alarm(
    start_nats: Callable[..., NatsCluster],
    influxdb: InfluxDB,
    database: str,
    pg_url: str,
    tmp_path: Path,
) -> None:
    cluster = start_nats(size=3, partitions=PARTITIONS)
    (tmp_path / "registry.toml").write_text(registry_text(f"plant-{database}"))
    WorkOrders.reset(secret=None)
    receiver = serve(WorkOrders)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    names: dict[str, str] = {}
    load: Load | None = None
    leaks: list[GasLeak] = []
    victim = ""
    try:
        for node, name in enumerate(("a", "b", "c")):
            client_id, proc = start_collector(
                name,
                cluster,
                node=node,
                influxdb=influxdb,
                database=database,
                store_url=pg_url,
                receiver_url=receiver.url,
                directory=tmp_path,
            )
            procs[client_id], names[client_id] = proc, name
        shared = shared_out(cluster, list(procs))
        victim = max(procs, key=lambda cid: list(shared.values()).count(cid))
        victims_partitions = {p for p, owner in shared.items() if owner == victim}
        leaking = next(d for d in GAS_DEVICES if partition_of(d, PARTITIONS) in victims_partitions)
        calm = next(d for d in GAS_DEVICES if partition_of(d, PARTITIONS) not in victims_partitions)
        load = Load(cluster, 9)
        leaks = [
            GasLeak(cluster.nodes[index].mqtt_port, device)
            for index, device in enumerate((leaking, calm))
        ]
        poll(load.count, lambda n: n >= 9 * 20, 60)

        gas_alarm = "SELECT id, colour FROM alerts WHERE device = %s AND detector = %s"
        leaks[0].leaking.set()  # 60 % LEL: level 2 (red) once it lasts 5 s
        # the victim raises it, and dies while the leak goes on
        assert poll(lambda: store_rows(pg_url, gas_alarm, leaking, GAS_RULE), bool, 60)
        # ... once the raised level is in its partition's checkpoint: a collector killed in
        # the moment between a decision and its checkpoint leaves the level to be raised
        # again by the next owner (docs/cluster.md, "Limits")
        opened_on = checkpoint_version(cluster, partition_of(leaking, PARTITIONS))
        # ... once its "opened" webhook is written down as delivered: a request in flight at
        # the kill is sent again with its key, by design (at-least-once, docs/cluster.md)
        pending = "SELECT count(*) FROM outbox WHERE status = 'pending'"
        assert poll(lambda: store_rows(pg_url, pending), lambda r: r == [(0,)], 60) == [(0,)]
        partition = partition_of(leaking, PARTITIONS)
        assert poll(lambda: checkpoint_version(cluster, partition), lambda v: v != opened_on, 60)
        kill_and_await_takeover(cluster, procs, victim)

        poll(load.count, lambda n: n >= 9 * 80, 90)
        time.sleep(2 * 10)  # what the victim held comes again after ack_wait_s
    finally:
        if load is not None:
            load.stop()
        for leak in leaks:
            leak.stop()

    try:
        influx = InfluxSettings(url=influxdb.url, database=database)
        assert_every_acknowledged_reading_stored(load, influx)
        # the gas devices' readings too, by seq and by points
        for leak in leaks:
            assert_stored_once(influx, leak)

        leaking_id = leaks[0].device.device_id
        alerts = store_rows(pg_url, gas_alarm, leaking_id, GAS_RULE)
        assert len(alerts) == 1, f"the gas alarm opened {len(alerts)} alerts: {alerts}"
        assert alerts[0][1] == "red"
        opens = store_rows(
            pg_url,
            "SELECT count(*) FROM alert_events WHERE alert_id = %s AND type = 'opened'",
            alerts[0][0],
        )
        assert opens == [(1,)]
        assert not store_rows(pg_url, gas_alarm, leaks[1].device.device_id, GAS_RULE)
        # judged once: one owner raised the level, the next one did not raise it again
        raised = influx_rows(
            influx,
            'SELECT "level" FROM "detections" WHERE "device" = '
            f"'{leaking_id}' AND \"kind\" = 'raised' AND \"detector\" = '{GAS_RULE}'",
        )
        assert len(raised) == 1, f"the leak was raised {len(raised)} times: {raised}"

        assert poll(lambda: store_rows(pg_url, pending), lambda r: r == [(0,)], 60) == [(0,)]
        outbox_keys = {key for (key,) in store_rows(pg_url, "SELECT event_key FROM outbox")}
        assert outbox_keys, "no alert event was sent"
        assert WorkOrders.keys_seen == outbox_keys  # every event reached the receiver
        assert WorkOrders.requests == len(WorkOrders.processed), (
            f"keys that came twice: {WorkOrders.repeated}"
        )
    finally:
        for proc in procs.values():
            stop_process(proc)
        receiver.stop()
        for client_id, name in names.items():
            log = (tmp_path / f"drill-{name}.log").read_text()
            if client_id != victim:
                assert "Traceback" not in log, log[-3000:]
