#!/usr/bin/env python3
"""Measure what a reading costs on InfluxDB's disk, for docs/deploy.md's sizing.

Runs the real chain on this machine: Mosquitto, InfluxDB 1.x (told to snapshot and
fully compact its shards as soon as they are cold, as it does on its own a few hours
later), the collector, and the simulator sending the example registry's devices plus
generated ones with ``--backfill-hours`` of history. Then it counts the readings stored
and the bytes of the TSM files (after compaction; the WAL emptied), and prints bytes per
reading. Everything the collector writes besides readings (detections, alert events,
unit_status and its own stats) is in the figure; with a short live run it is a small share.

Usage: scripts/influx_sizing.py [--hours 24] [--generate 10]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from collector.config import InfluxSettings
from collector.families import FAMILIES
from collector.influx import query_sync, rows
from fieldtools.demo import wait_for_collector
from fieldtools.localservices import InfluxDB, Mosquitto, free_port, stop_process

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config" / "smartunit.example.toml"
DATABASE = "sizing"


@dataclass
class CompactingInfluxDB(InfluxDB):
    """InfluxDB that writes its cache to TSM and compacts a shard once it is cold for 2 s
    (defaults: 10 min and 4 h), so the size measured is the size kept."""

    def config_text(self) -> str:
        return (
            super()
            .config_text()
            .replace(
                "[data]\n",
                '[data]\n  cache-snapshot-write-cold-duration = "2s"\n'
                '  compact-full-write-cold-duration = "2s"\n',
            )
        )


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def stored_readings(influx: InfluxSettings) -> int:
    total = 0
    for family in FAMILIES:
        # every reading has a seq: one value per reading
        result = query_sync(influx, f'SELECT count("seq") FROM "{family}"')
        total += sum(int(r["count"]) for s in result for r in rows(s))
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=24.0, help="history simulated")
    parser.add_argument("--generate", type=int, default=10, help="extra devices per family")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="smartunit-sizing-"))
    broker = Mosquitto(work / "mosquitto")
    influxdb = CompactingInfluxDB(work / "influxdb")
    broker.start()
    influxdb.start()
    influx = InfluxSettings(url=influxdb.url, database=DATABASE)
    env = {
        **os.environ,
        "SMARTUNIT_MQTT_URL": broker.url,
        "SMARTUNIT_INFLUX_URL": influxdb.url,
        "SMARTUNIT_INFLUX_DB": DATABASE,
        "SMARTUNIT_DATA_DIR": str(work / "data"),
        "SMARTUNIT_HTTP_PORT": str(free_port()),
    }
    smartunit = [sys.executable, "-m", "collector.cli"]
    collector = subprocess.Popen(
        [*smartunit, "run", "--config", str(CONFIG)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_collector(broker.url, "smartunit-collector")
        subprocess.run(
            [
                *smartunit,
                "simulate",
                "--config",
                str(CONFIG),
                "--mqtt-url",
                broker.url,
                "--generate",
                str(args.generate),
                "--backfill-hours",
                str(args.hours),
                "--duration",
                "1",
            ],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        previous, readings = -1, stored_readings(influx)
        while readings != previous:  # until the collector has stored the backlog
            time.sleep(5)
            previous, readings = readings, stored_readings(influx)
        stop_process(collector)
        shard_dir = work / "influxdb" / "data" / DATABASE
        wal_dir = work / "influxdb" / "wal" / DATABASE
        for _ in range(60):  # snapshot and full compaction, once the shard is cold
            time.sleep(2)
            if directory_bytes(wal_dir) == 0 and not list(shard_dir.rglob("*.tsm.tmp")):
                break
        # The series file (_series) is preallocated in segments of 4 MiB and grows with
        # series, not readings: shown apart.
        tsm = sum(f.stat().st_size for f in shard_dir.rglob("*.tsm"))
        series_file = directory_bytes(shard_dir / "_series")
        print(
            f"{readings} readings: {tsm} bytes of TSM files, {tsm / readings:.1f} bytes per "
            f"reading; the database's directory {directory_bytes(shard_dir)} bytes, of which "
            f"{series_file} the series file"
        )
    finally:
        stop_process(collector)
        influxdb.stop()
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
