"""SIGKILL mid-dispatch: nothing decided is lost, nothing is processed twice."""

from __future__ import annotations

import json
import signal
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from fieldtools.demo import wait_for_collector
from fieldtools.localservices import spawn, stop_process
from tests.conftest import collector_env
from tests.receivers import SECRET, WorkOrders
from tests.test_alerts_e2e import wait_for
from tests.test_detection_e2e import PRESETS, REGISTRY


def pending(database: Path) -> int:
    if not database.exists():
        return 0
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        row = db.execute("SELECT count(*) FROM outbox WHERE status = 'pending'").fetchone()
    return int(row[0])


@pytest.mark.slow
def test_killed_mid_dispatch_and_restarted_loses_nothing(
    broker,
    influxdb,
    database,
    publisher,
    tmp_path: Path,
    receiver_url: str,
) -> None:
    registry = tmp_path / "registry.toml"
    registry.write_text(REGISTRY)
    config = tmp_path / "smartunit.toml"
    config.write_text(
        f'[mqtt]\nclient_id = "crash-{database}"\n[registry]\npath = "{registry}"\n'
        f'[detection]\nrules = ["{PRESETS}"]\n'
        "[alerts]\nretry_initial_s = 0.1\nretry_max_s = 0.5\n"
    )
    data_dir = tmp_path / "data"
    env = collector_env(
        broker,
        influxdb,
        database,
        data_dir,
        SMARTUNIT_WEBHOOK_URL=receiver_url,
        SMARTUNIT_WEBHOOK_SECRET=SECRET,
    )
    command = [sys.executable, "-m", "collector.cli", "run", "--config", str(config)]

    WorkOrders.failures_left = 10**6  # the work-order system is down
    first = spawn(command, env=env, log_path=tmp_path / "first.log")
    wait_for_collector(broker.url, f"crash-{database}")
    start = time.time() - 60
    for i, value in enumerate([3, 55, 56, 57, 58, 10]):  # red, then cleared
        publisher.publish(
            "smartunit/v1/chem/gas-1/data",
            json.dumps({"ts": start + 3 * i, "readings": {"lel_pct": value}}),
        )
    alerts_db = data_dir / "alerts.db"
    assert wait_for(lambda: pending(alerts_db) >= 2), (tmp_path / "first.log").read_text()[-2000:]
    assert wait_for(lambda: WorkOrders.requests > 0)  # it was trying: killed mid-dispatch
    first.send_signal(signal.SIGKILL)
    first.wait()

    WorkOrders.failures_left = 0  # the receiver comes back while we are down
    second = spawn(command, env=env, log_path=tmp_path / "second.log")
    try:
        assert wait_for(lambda: pending(alerts_db) == 0, timeout_s=30)
    finally:
        stop_process(second)

    with sqlite3.connect(alerts_db) as db:  # everything that was to be delivered
        keys = [r[0] for r in db.execute("SELECT event_key FROM outbox")]
    processed = [m["event"]["id"] for m in WorkOrders.processed]
    assert keys and sorted(processed) == sorted(keys)  # every event, each processed once
    assert len(set(processed)) == len(processed)
    per_alert: dict[int, list[int]] = {}
    for message in WorkOrders.processed:
        per_alert.setdefault(message["alert"]["id"], []).append(message["event"]["seq"])
    assert all(seqs == sorted(seqs) for seqs in per_alert.values())  # in order per alert
