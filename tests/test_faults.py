"""Faults under load, with real processes: nothing is lost, counted by the devices' seq.

A load thread plays ten devices publishing at QoS 1, each with its own ``seq`` from 1.
After the fault and the recovery, every device's seqs 1..n must be in InfluxDB exactly
as points (duplicates collapse: same series and device time), none missing.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from collector.config import InfluxSettings
from collector.demo import wait_for_collector
from collector.localservices import InfluxDB, spawn, stop_process
from tests.conftest import Publisher, collector_env, influx_rows, poll

DEVICES = [f"cam-load-{k}" for k in range(10)]


class Load:
    """Ten cameras, ``rate`` messages per second in all, until stopped."""

    def __init__(self, broker, name: str, rate: float = 200.0) -> None:
        self.publisher = Publisher(broker, name)
        self.sent = dict.fromkeys(DEVICES, 0)
        self._period = len(DEVICES) / rate
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._base = time.time()
        self._thread.start()

    def _run(self) -> None:
        tick = time.monotonic()
        while not self._stop.is_set():
            for device in DEVICES:
                seq = self.sent[device] + 1
                body = {"ts": self._base + seq * 0.001, "seq": seq, "people": seq % 97}
                self.publisher.publish(f"smartunit/v1/camera/{device}/data", json.dumps(body))
                self.sent[device] = seq
            tick += self._period
            time.sleep(max(0.0, tick - time.monotonic()))

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join(10)
        self.publisher.close()
        return dict(self.sent)


def stored(influx: InfluxSettings) -> dict[str, tuple[int, int, int]]:
    """Per device: (points, distinct seqs, highest seq)."""
    out = {}
    query = (
        'SELECT count("seq") AS "points", count(distinct("seq")) AS "seqs", max("seq") AS "top" '
        'FROM "camera" WHERE "device" =~ /^cam-load-/ GROUP BY "device"'
    )
    for row in influx_rows(influx, query):
        out[row["device"]] = (row["points"], row["seqs"], row["top"])
    return out


def wait_all(influx: InfluxSettings, sent: dict[str, int], timeout_s: float = 40) -> dict:
    expected = {d: (n, n, n) for d, n in sent.items()}
    return poll(lambda: stored(influx), lambda found: found == expected, timeout_s, 0.25)


@pytest.mark.slow
def test_influxdb_killed_for_30_s_under_load_loses_nothing(
    broker, make_settings, run_collector, tmp_path: Path
) -> None:
    own = InfluxDB(tmp_path / "influx").start()
    settings = make_settings(
        influx={"url": own.url},
        ingest={"spool_after_s": 1.0, "retry_initial_s": 0.2, "retry_max_s": 1.0},
        detection={"statistical": None},
    )
    collector = run_collector(settings)
    load = Load(broker, "load-influx")
    time.sleep(3)
    own.kill()  # SIGKILL, mid-stream
    outage_end = time.monotonic() + 30
    spooled = 0
    while time.monotonic() < outage_end:
        time.sleep(1)
        spooled = max(spooled, collector.collector.spool.pending_bytes)
    own.start()
    time.sleep(3)
    sent = load.stop()
    found = wait_all(settings.influx, sent)
    assert found == {d: (n, n, n) for d, n in sent.items()}
    assert sum(sent.values()) > 30 * 150  # it was under load all along
    assert spooled > 0  # acknowledged to the broker from the spool, not left with it
    assert collector.stats.spool_replayed > 0
    collector.stop()
    own.stop()


@pytest.mark.slow
def test_collector_sigkilled_under_load_loses_nothing_and_duplicates_collapse(
    broker, influxdb, database, tmp_path: Path
) -> None:
    config = tmp_path / "smartunit.toml"
    config.write_text(f'[mqtt]\nclient_id = "kill-{database}"\n[detection]\nstatistical = ""\n')
    env = collector_env(broker, influxdb, database, tmp_path / "data")
    command = [sys.executable, "-m", "collector.cli", "run", "--config", str(config)]
    influx = InfluxSettings(url=influxdb.url, database=database)

    first = spawn(command, env=env, log_path=tmp_path / "first.log")
    wait_for_collector(broker.url, f"kill-{database}")
    load = Load(broker, "load-kill")
    time.sleep(4)
    first.send_signal(signal.SIGKILL)  # mid-batch: some written, some not acknowledged
    first.wait()
    time.sleep(3)  # the devices keep sending; the broker keeps the session's messages
    second = spawn(command, env=env, log_path=tmp_path / "second.log")
    try:
        time.sleep(3)
        sent = load.stop()
        found = wait_all(influx, sent)
        assert found == {d: (n, n, n) for d, n in sent.items()}, (
            tmp_path / "second.log"
        ).read_text()[-2000:]
    finally:
        stop_process(second)
