#!/usr/bin/env python3
"""Ingest throughput: MQTT -> collector -> InfluxDB, against the broker's own delivery rate.

Everything runs here, on real servers started for the run (Mosquitto, InfluxDB 1.x) and the
real collector process (``smartunit run``). Workload: a realistic mix of the three
families from 10,000 registered devices (4,000 cameras, 3,000 parking sensors, 3,000
chemical-park sensors, placed in 500 units), one reading per message, QoS 1.

Three measurements, printed with their ratios:

drain  N messages are queued in the broker for two persistent sessions, then each session
       drains them: ``mosquitto_sub`` (the reference: the broker's single-subscriber QoS 1
       delivery rate, no processing) and the collector (every reading decoded, validated,
       placed by the registry and stored; the clock stops when InfluxDB holds all N).
naive  the same N queued messages drained by the naive baseline of bench/naive.py
       (aiomqtt + json + one HTTP write per batch), into its own database.
live   a publisher sends N messages as fast as it can while the collector runs; the rate
       is N / (first publish -> all N stored in InfluxDB).

Usage: bench/ingest.py [--messages N] [--devices D]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import naive
from bench.mqttblast import blast
from collector.config import InfluxSettings
from collector.demo import wait_for_collector
from collector.errors import StoreError
from collector.influx import query_sync
from collector.localservices import (
    InfluxDB,
    Mosquitto,
    find_binary,
    free_port,
    spawn,
    stop_process,
)

PRESETS = Path(__file__).resolve().parent.parent / "config" / "rules.presets.toml"
FAMILY_SHARE = {"camera": 0.4, "parking": 0.3, "chem": 0.3}
DATA_FILTER = "smartunit/v1/+/+/data"


def fleet(devices: int) -> list[tuple[str, str]]:
    out = []
    for family, share in FAMILY_SHARE.items():
        out += [(family, f"{family[:4]}-{i:05d}") for i in range(round(devices * share))]
    return out


def write_registry(path: Path, devices: list[tuple[str, str]], units: int = 500) -> None:
    lines = []
    for u in range(units):
        district, street = f"district-{u % 6}", f"street-{u % 30}"
        lines += [
            f"[units.unit-{u:03d}]",
            'kind = "other"',
            f'hierarchy = {{ city = "suzhou", district = "{district}", street = "{street}", '
            f'community = "community-{u % 120}", grid = "G{u:04d}" }}',
            "capacity = 300",
            "safe_capacity = 800",
        ]
    for i, (family, device) in enumerate(devices):
        lines += [f"[devices.{device}]", f'unit = "unit-{i % units:03d}"', f'family = "{family}"']
    path.write_text("\n".join(lines) + "\n")


def messages(devices: list[tuple[str, str]], count: int, seed: int = 7) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    now = time.time() - 3600  # an hour of history: well inside the accepted age
    seqs = dict.fromkeys((d for _, d in devices), 0)
    out = []
    for i in range(count):
        family, device = devices[i % len(devices)]
        seqs[device] += 1
        ts = round(now + i * 0.001, 3)
        if family == "camera":
            body = {
                "ts": ts,
                "seq": seqs[device],
                "people": rng.randint(0, 900),
                "vehicles": rng.randint(0, 120),
                "interval_s": 10,
            }
        elif family == "parking":
            body = {"ts": ts, "seq": seqs[device], "occupied": rng.randint(0, 300)}
        else:
            body = {
                "ts": ts,
                "seq": seqs[device],
                "readings": {
                    "lel_pct": round(rng.uniform(0, 5), 2),
                    "h2s_ppm": round(rng.uniform(0, 2), 2),
                    "temp_c": round(rng.gauss(40, 2), 2),
                    "pressure_kpa": round(rng.gauss(310, 2), 1),
                    "level_pct": round(rng.uniform(20, 90), 1),
                },
            }
        out.append((f"smartunit/v1/{family}/{device}/data", orjson.dumps(body)))
    return out


def publish_all(broker: Mosquitto, batch: list[tuple[str, bytes]]) -> float:
    """Publish at QoS 1 as fast as the broker acknowledges; returns the publishing rate."""
    return blast(broker.port, batch, f"bench-pub-{time.time_ns()}")


def register_session(broker: Mosquitto, client_id: str) -> None:
    """Create a persistent session subscribed to device data, then leave."""
    subscribed = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    client.on_connect = lambda c, *_: c.subscribe(DATA_FILTER, qos=1)
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    subscribed.wait(10)
    client.disconnect()
    client.loop_stop()


def broker_drain_rate(broker: Mosquitto, count: int) -> float:
    started = time.perf_counter()
    subprocess.run(
        [
            find_binary("mosquitto_sub"),
            "-p",
            str(broker.port),
            "-c",
            "-i",
            "bench-ref",
            "-q",
            "1",
            "-t",
            DATA_FILTER,
            "-C",
            str(count),
        ],
        stdout=subprocess.DEVNULL,
        check=True,
        timeout=600,
    )
    return count / (time.perf_counter() - started)


def stored(influx: InfluxSettings) -> int:
    total = 0
    try:
        found = query_sync(influx, 'SELECT count("seq") FROM "camera","parking","chem"')
    except StoreError:  # the collector has not created the database yet
        return 0
    for series in found:
        total += int(series["values"][0][1])
    return total


def wait_stored(influx: InfluxSettings, count: int, timeout_s: float = 600) -> float:
    """Wall-clock time (epoch seconds) at which InfluxDB held ``count`` readings."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if stored(influx) >= count:
            return time.time()
        time.sleep(0.02)
    raise SystemExit(f"only {stored(influx)} of {count} readings stored")


def connected_at(log: Path, *, last: bool) -> float:
    """Epoch seconds of the collector's (last) "MQTT connected" log line."""
    stamps = [
        datetime.fromisoformat(orjson.loads(line)["ts"].replace("Z", "+00:00")).timestamp()
        for line in log.read_text().splitlines()
        if line.startswith("{") and '"MQTT connected"' in line
    ]
    return stamps[-1] if last else stamps[0]


def start_collector(
    workdir: Path,
    broker: Mosquitto,
    influxdb: InfluxDB,
    database: str,
    registry: Path,
    client_id: str,
) -> subprocess.Popen[bytes]:
    config = workdir / f"{database}.toml"
    config.write_text(
        f'[mqtt]\nclient_id = "{client_id}"\n[registry]\npath = "{registry}"\n'
        f'[detection]\nrules = ["{PRESETS}"]\n'
        '[ingest]\npublish_rejections = true\n[logging]\nlevel = "info"\n'
    )
    env = {
        **os.environ,
        "SMARTUNIT_MQTT_URL": broker.url,
        "SMARTUNIT_INFLUX_URL": influxdb.url,
        "SMARTUNIT_INFLUX_DB": database,
        "SMARTUNIT_DATA_DIR": str(workdir / f"{database}-data"),
        "SMARTUNIT_HTTP_PORT": str(free_port()),
    }
    proc = spawn(
        [sys.executable, "-m", "collector.cli", "run", "--config", str(config)],
        env=env,
        log_path=workdir / f"{database}.log",
    )
    wait_for_collector(broker.url, client_id)
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--devices", type=int, default=10_000)
    args = parser.parse_args()
    n = args.messages

    with tempfile.TemporaryDirectory(prefix="smartunit-bench-") as tmp:
        workdir = Path(tmp)
        broker = Mosquitto(workdir / "mosquitto", persistence=False).start()
        influxdb = InfluxDB(workdir / "influxdb").start()
        try:
            devices = fleet(args.devices)
            registry = workdir / "registry.toml"
            write_registry(registry, devices)
            batch = messages(devices, n)
            print(
                f"workload: {n} messages from {len(devices)} devices "
                f"(camera/parking/chem {FAMILY_SHARE}), QoS 1, one reading per message"
            )

            # drain: both sessions get the same N queued messages.
            drain_db = InfluxSettings(url=influxdb.url, database="bench_drain")
            collector = start_collector(
                workdir, broker, influxdb, "bench_drain", registry, "bench-collector"
            )
            stop_process(collector)
            register_session(broker, "bench-ref")
            naive.run_register(broker.port, "bench-naive")
            publish_rate = publish_all(broker, batch)
            ref_rate = broker_drain_rate(broker, n)
            collector = start_collector(
                workdir, broker, influxdb, "bench_drain", registry, "bench-collector"
            )
            done = wait_stored(drain_db, n)
            stop_process(collector)
            # Queued messages flow from the moment the collector connects.
            drain_rate = n / (done - connected_at(workdir / "bench_drain.log", last=True))
            naive_rate = naive.run(broker.port, "bench-naive", influxdb.url, "bench_naive", n)

            # live: publish while the collector runs.
            live_db = InfluxSettings(url=influxdb.url, database="bench_live")
            collector = start_collector(
                workdir, broker, influxdb, "bench_live", registry, "bench-live"
            )
            live_batch = messages(devices, n, seed=8)
            started = time.time()
            live_publish_rate = publish_all(broker, live_batch)
            done = wait_stored(live_db, n)
            stop_process(collector)
            live_rate = n / (done - started)
        finally:
            influxdb.stop()
            broker.stop()

    print(f"publisher (raw QoS 1 client, into broker queues):  {publish_rate:10.0f} msg/s")
    print(f"broker -> mosquitto_sub, drain of queued QoS 1:    {ref_rate:10.0f} msg/s")
    print(f"broker -> collector -> InfluxDB, drain:            {drain_rate:10.0f} readings/s")
    print(
        f"live: publisher -> collector -> InfluxDB:          {live_rate:10.0f} readings/s"
        f"  (publisher alone {live_publish_rate:.0f} msg/s)"
    )
    print(f"naive baseline (aiomqtt + json + HTTP per batch), drain: {naive_rate:10.0f} msg/s")
    print(
        f"drain_rate={drain_rate:.0f} broker_rate={ref_rate:.0f} naive_rate={naive_rate:.0f} "
        f"live_rate={live_rate:.0f}"
    )
    print(
        f"ratio_vs_broker={drain_rate / ref_rate:.3f} ratio_vs_naive={drain_rate / naive_rate:.2f}"
    )


if __name__ == "__main__":
    main()
