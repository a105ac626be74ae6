"""Verification of resolved alerts when devices are shared out between instances
(transport "nats", one PostgreSQL alert store): a resolved alert of a device that the
instance running the alert clock does not read is still verified and closed."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from collector.alerts.model import State
from collector.natssubjects import device_token, partition_of
from fieldtools.localservices import InfluxDB
from fieldtools.natscluster import NatsCluster
from tests.conftest import CollectorThread, poll
from tests.natsfixtures import nats_collector_settings
from tests.test_cluster_drill import GAS_DEVICES, PARTITIONS, GasLeak, registry_text
from tests.test_detection_e2e import PRESETS
from tests.test_nats_ownership import owners


def clock_holder(store_url: str) -> str:
    with psycopg.connect(store_url, connect_timeout=5) as db:
        found = db.execute("SELECT holder FROM leases").fetchall()
    return str(found[0][0]) if found else ""


def store_holder(collector: CollectorThread) -> str:
    assert collector.collector is not None and collector.collector.alerts is not None
    storage: Any = collector.collector.alerts._storage
    return str(storage.database.holder)


def test_a_resolved_alert_of_a_device_another_instance_reads_is_verified_and_closed(
    start_nats: Callable[..., NatsCluster],
    influxdb: InfluxDB,
    database: str,
    pg_url: str,
    tmp_path: Path,
    run_collector: Callable[..., CollectorThread],
) -> None:
    cluster = start_nats(size=3, partitions=PARTITIONS)
    registry = tmp_path / "registry.toml"
    registry.write_text(registry_text(f"plant-{database}"))

    def collector(name: str) -> CollectorThread:
        settings = nats_collector_settings(
            cluster,
            influx_url=influxdb.url,
            database=database,
            data_dir=tmp_path / name,
            client_id=f"{name}-{database}",
        )
        updates = {
            "registry": settings.registry.model_copy(update={"path": registry}),
            "detection": settings.detection.model_copy(update={"rules": [PRESETS]}),
            "alerts": settings.alerts.model_copy(
                update={
                    "store": pg_url,
                    "verify_interval_s": 0.5,
                    "verify_window_s": 3.0,
                    "claim_lease_s": 5.0,
                }
            ),
        }
        return run_collector(settings.model_copy(update=updates))

    first = collector("first")
    assert poll(lambda: clock_holder(pg_url), bool, 30) == store_holder(first)
    second = collector("second")
    shared = poll(
        lambda: owners(cluster),
        lambda found: len(found) == PARTITIONS and len(set(found.values())) == 2,
        60,
    )
    assert clock_holder(pg_url) == store_holder(first)  # the first runs the alert clock
    # a device the second reads: the first never sees its readings
    device = next(
        d
        for d in GAS_DEVICES
        if shared[partition_of(device_token(d), PARTITIONS)] == second.settings.mqtt.client_id
    )
    leak = GasLeak(cluster.nodes[0].mqtt_port, device)
    try:
        book = second.collector.alerts if second.collector else None
        assert book is not None

        def the_alert() -> list[Any]:
            return [a for a in book.find() if a.fingerprint.device == device]

        leak.leaking.set()
        (alert,) = poll(the_alert, bool, 60)
        leak.leaking.clear()  # back to 2 % LEL: the condition ends
        poll(the_alert, lambda found: not found[0].condition_active, 60)
        book.resolve(
            alert.id, actor="grid-officer-7", note="valve closed", now_ms=int(time.time() * 1000)
        )
        # the device keeps reporting normal readings: verified and closed after the window
        closed = poll(the_alert, lambda found: found[0].state == State.CLOSED, 60)
        assert closed[0].state == State.CLOSED, (
            "a resolved alert of a device the clock's instance does not read stays open"
        )
    finally:
        leak.stop()
