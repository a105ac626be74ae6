"""The spool's faults with real processes: a full disk under it, a damaged record in it.

The disk-full drill, on a real small filesystem, with the collector as its own process:
InfluxDB is down, so the spool takes every batch until it fills the disk in the middle of
a record; the disk refuses batches for a while (their messages stay with the broker);
room is made, InfluxDB comes back, the collector is SIGKILLed and started again. Every
reading the devices sent, acknowledged from the spool or left with the broker, must be in
InfluxDB, counted by ``seq`` and by points, and new readings must go on flowing.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import httpx
import pytest

from collector.config import InfluxSettings
from collector.lineprotocol import encode_line
from collector.spool import DiskSpool
from fieldtools.demo import wait_for_collector
from fieldtools.localservices import InfluxDB, spawn, stop_process
from tests.conftest import collector_env, fill_disk, poll
from tests.test_durability import camera, seqs
from tests.test_faults import Load, wait_all


@pytest.mark.slow
def test_a_full_disk_under_the_spool_loses_no_acknowledged_reading(
    broker, database, small_filesystem, tmp_path: Path
) -> None:
    disk = small_filesystem(8 * 1024 * 1024)
    own = InfluxDB(tmp_path / "influx").start()
    client_id = f"disk-{database}"
    config = tmp_path / "smartunit.toml"
    config.write_text(
        f'[mqtt]\nclient_id = "{client_id}"\n'
        '[detection]\nstatistical = ""\n'
        "[ingest]\nspool_after_s = 0.5\nretry_initial_s = 0.2\nretry_max_s = 1.0\n"
        "stats_interval_s = 1.0\n"
    )
    env = collector_env(broker, own, database, disk / "data")
    command = [sys.executable, "-m", "collector.cli", "run", "--config", str(config)]
    influx = InfluxSettings(url=own.url, database=database)
    first_log = tmp_path / "first.log"
    first = spawn(command, env=env, log_path=first_log)
    second = None
    load = None
    try:
        wait_for_collector(broker.url, client_id)
        load = Load(broker, f"load-{database}")
        time.sleep(2)
        own.kill()
        ballast = fill_disk(disk, leave=160 * 1024)  # a few seconds of spooled batches
        assert poll(
            first_log.read_text, lambda text: "the spool's disk is full" in text, 60, 0.25
        ), first_log.read_text()[-2000:]
        assert poll(first_log.read_text, lambda text: '"disk-full"' in text, 20, 0.25)
        time.sleep(3)  # the disk refuses batches; their messages wait at the broker
        ballast.unlink()
        assert poll(
            first_log.read_text, lambda text: "the spool's disk has room again" in text, 20
        ), first_log.read_text()[-2000:]
        # InfluxDB still down: the batches the disk refused go to the spool now, and the
        # readings behind them are acknowledged again instead of piling up at the broker
        stored = stored_metric(env)
        assert poll(lambda: stored_metric(env), lambda now: now > stored + 200, 30) > stored + 200
        own.start()
        time.sleep(4)  # replay under way, and new batches spooled behind it
        first.send_signal(signal.SIGKILL)
        first.wait()
        second = spawn(command, env=env, log_path=tmp_path / "second.log")
        time.sleep(4)  # new readings, taken by the restarted collector
        sent = load.stop()
        load = None
        found = wait_all(influx, sent, timeout_s=90)
        assert found == {d: (n, n, n) for d, n in sent.items()}, (
            tmp_path / "second.log"
        ).read_text()[-3000:]
        assert "skipping a damaged spool record" not in first_log.read_text()
        assert "skipping a damaged spool record" not in (tmp_path / "second.log").read_text()
    finally:
        if load is not None:
            load.stop()
        for proc in (first, second):
            if proc is not None:
                stop_process(proc)
        own.stop()


def stored_metric(env: dict[str, str]) -> float:
    """The collector process's readings acknowledged so far, from its /metrics."""
    port = env["SMARTUNIT_HTTP_PORT"]
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text.splitlines():
        if line.startswith("smartunit_readings_stored_total "):
            return float(line.split()[1])
    raise AssertionError("no smartunit_readings_stored_total in /metrics")


def test_a_damaged_spool_record_is_skipped_reported_and_the_rest_replayed(
    make_settings, run_collector, publisher
) -> None:
    """One flipped byte (not even UTF-8 any more) in the third of five spooled batches."""
    settings = make_settings(detection={"statistical": None})
    spool = DiskSpool(settings.data_dir / "spool", max_bytes=settings.ingest.spool_max_bytes)
    now_ms = int(time.time() * 1000)
    ends = []
    for batch in range(5):
        spool.append(
            [
                encode_line(
                    "camera", {"device": "cam-d"}, {"seq": seq, "people": seq}, now_ms + seq
                )
                for seq in range(batch * 10 + 1, batch * 10 + 11)
            ]
        )
        (segment,) = spool.directory.glob("*.seg")
        ends.append(segment.stat().st_size)
    data = bytearray(segment.read_bytes())
    data[(ends[1] + ends[2]) // 2] = 0xFF
    segment.write_bytes(bytes(data))

    collector = run_collector(settings)  # starts: the damage is no reason to stop ingest
    kept = [seq for seq in range(1, 51) if not 21 <= seq <= 30]
    assert poll(lambda: seqs(settings.influx), lambda found: found == kept, 30) == kept
    assert collector.collector.spool.corrupt_records == 1
    book = collector.collector.alerts

    def corrupt() -> list:
        return [a for a in book.find() if a.fingerprint.detector == "spool-corrupt"]

    (alert,) = poll(corrupt, bool, 20)
    assert (alert.colour, alert.family) == ("red", "system")
    assert collector.collector.metrics()["spool_corrupt_records_total"] == 1
    publisher.publish(*camera(1000))  # and new readings flow
    assert poll(lambda: seqs(settings.influx), lambda found: 1000 in found, 30)[-1] == 1000
    collector.stop()
