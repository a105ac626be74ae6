#!/usr/bin/env python3
"""Ingest throughput: MQTT -> collector -> InfluxDB, against the broker's own delivery rate.

Everything runs here, on real servers started for the run (Mosquitto, InfluxDB 1.x) and the
real collector process (``smartunit run``: decode, store, detectors and alert engine on).
Workload: a realistic mix of the three families from 10,000 registered devices (4,000
cameras, 3,000 parking sensors, 3,000 chemical-park sensors, placed in 500 units), one
reading per message, QoS 1.

drain    N messages are queued in the broker for persistent sessions, then each drains
         them: ``mosquitto_sub`` (the reference: the broker's single-subscriber QoS 1
         delivery rate, no processing), the collector (the clock stops when it has stored
         all N readings, checked by counting them in InfluxDB), and the naive baseline of
         bench/naive.py (aiomqtt + json + one HTTP write per batch).
live     a publisher sends N messages as fast as the broker takes them while the
         subscriber runs: ``mosquitto_sub`` first, then the collector, then the naive
         baseline in a process of its own (first publish -> all N received / stored);
         ``--rounds`` rounds of the three, each ratio the median of the rounds' own.
arrays   N readings queued as backlog arrays of 20 per message, drained by the collector.
alerts   at half the collector's live rate (a publisher shares the machine then too),
         gas sensors cross the GB/T 50493 alarm levels one by one; latency is the
         publish of the triggering reading -> the signed webhook received by a
         receiver in this process, configured as a gas work-order system would be
         (chem, orange and red), after 5 untimed alerts.
memory   the collector's resident memory grown over the drain, per 10,000 detector series.

The last line is ``ratio_vs_broker=<x> ratio_vs_naive=<y> alert_p99_ms=<z>`` with the
live (sustained) ratios, medians over the rounds: devices publishing while the collector
stores, as a fleet loads it. The line before it gives the drain ratios (a queued backlog
taken in, with no publisher sharing the two cores), where the broker alone is 2-3 times
faster than live.

Usage: bench/ingest.py [--messages N] [--devices D] [--rounds R]
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import naive
from bench.mqttblast import blast
from collector.config import InfluxSettings
from collector.errors import StoreError
from collector.influx import query_sync
from fieldtools.demo import wait_for_collector
from fieldtools.localservices import (
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


def reading(family: str, seq: int, ts: float, rng: random.Random) -> dict[str, object]:
    if family == "camera":
        return {
            "ts": ts,
            "seq": seq,
            "people": rng.randint(0, 900),
            "vehicles": rng.randint(0, 120),
            "interval_s": 10,
        }
    if family == "parking":
        return {"ts": ts, "seq": seq, "occupied": rng.randint(0, 300)}
    return {
        "ts": ts,
        "seq": seq,
        "readings": {
            "lel_pct": round(rng.uniform(0, 5), 2),
            "h2s_ppm": round(rng.uniform(0, 2), 2),
            "temp_c": round(rng.gauss(40, 2), 2),
            "pressure_kpa": round(rng.gauss(310, 2), 1),
            "level_pct": round(rng.uniform(20, 90), 1),
        },
    }


def messages(
    devices: list[tuple[str, str]],
    count: int,
    seed: int = 7,
    *,
    start: float | None = None,
    spacing_s: float = 0.001,
) -> list[tuple[str, bytes]]:
    """``count`` messages of one reading, the devices in turn; device time from ``start``.

    By default the device times end now: a fleet an hour quiet would (rightly) raise
    thousands of silence alerts while the benchmark waits.
    """
    rng = random.Random(seed)
    now = time.time() - count * spacing_s if start is None else start
    seqs = dict.fromkeys((d for _, d in devices), 0)
    out = []
    for i in range(count):
        family, device = devices[i % len(devices)]
        seqs[device] += 1
        body = reading(family, seqs[device], round(now + i * spacing_s, 3), rng)
        out.append((f"smartunit/v1/{family}/{device}/data", orjson.dumps(body)))
    return out


def backlog_arrays(
    devices: list[tuple[str, str]], readings: int, per_message: int = 20, seed: int = 9
) -> list[tuple[str, bytes]]:
    """Devices back from an outage: arrays of ``per_message`` buffered readings, 1 s apart."""
    rng = random.Random(seed)
    rounds = -(-readings // per_message // len(devices))  # arrays per device
    start = time.time() - rounds * per_message  # the newest readings are from just now
    out = []
    for i in range(readings // per_message):
        family, device = devices[i % len(devices)]
        base = start + (i // len(devices)) * per_message
        body = [reading(family, k + 1, round(base + k, 3), rng) for k in range(per_message)]
        out.append((f"smartunit/v1/{family}/{device}/data", orjson.dumps(body)))
    return out


def register_session(broker: Mosquitto, client_id: str, *, clean: bool = False) -> None:
    """Create a persistent session subscribed to device data (``clean``: delete it)."""
    subscribed = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
    client.on_connect = lambda c, *_: c.subscribe(DATA_FILTER, qos=1)
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    subscribed.wait(10)
    client.disconnect()
    client.loop_stop()


def mosquitto_sub(broker: Mosquitto, client_id: str, count: int) -> subprocess.Popen[bytes]:
    args = ["-p", str(broker.port), "-c", "-i", client_id, "-q", "1", "-t", DATA_FILTER]
    return subprocess.Popen(
        [find_binary("mosquitto_sub"), *args, "-C", str(count)], stdout=subprocess.DEVNULL
    )


def broker_drain_rate(broker: Mosquitto, client_id: str, count: int) -> float:
    started = time.perf_counter()
    if mosquitto_sub(broker, client_id, count).wait(600) != 0:
        raise SystemExit("mosquitto_sub failed")
    return count / (time.perf_counter() - started)


def timed_live(
    broker: Mosquitto,
    batch: list[tuple[str, bytes]],
    receiver: subprocess.Popen[bytes],
    session: str,
) -> float:
    """Publish ``batch`` while ``receiver`` takes it: messages/s until the receiver is done."""
    started = time.perf_counter()
    blast(broker.port, batch, f"bench-pub-{time.time_ns()}")
    if receiver.wait(600) != 0:
        raise SystemExit(f"{session} failed")
    rate = len(batch) / (time.perf_counter() - started)
    register_session(broker, session, clean=True)
    return rate


def broker_live_rate(broker: Mosquitto, batch: list[tuple[str, bytes]]) -> float:
    register_session(broker, "bench-live-ref")
    receiver = mosquitto_sub(broker, "bench-live-ref", len(batch))
    return timed_live(broker, batch, receiver, "bench-live-ref")


def live_round(
    workdir: Path,
    broker: Mosquitto,
    influxdb: InfluxDB,
    registry: Path,
    devices: list[tuple[str, str]],
    count: int,
    number: int,
) -> tuple[float, float, float]:
    """One live round: (broker, collector, naive baseline) messages/s, back to back.

    A ratio is taken within a round: this machine's speed drifts by a third over minutes
    (the naive baseline's own rate moved from 9k to 6k msg/s within an hour), and three
    rates measured seconds apart share the drift.
    """
    batch = messages(devices, count, seed=7 + number)
    broker_rate = broker_live_rate(broker, batch)
    database, session = f"bench_live{number}", f"bench-live{number}"
    collector = start_collector(workdir, broker, influxdb, database, registry, session)
    started = time.time()
    blast(broker.port, batch, f"bench-pub-{time.time_ns()}")
    collector_rate = count / (collector.wait_stored(count) - started)
    collector.stop()
    register_session(broker, session, clean=True)
    return broker_rate, collector_rate, naive_live(broker, influxdb, batch, number)


def stored(influx: InfluxSettings) -> int:
    total = 0
    try:
        found = query_sync(influx, 'SELECT count("seq") FROM "camera","parking","chem"')
    except StoreError:  # the collector has not created the database yet
        return 0
    for series in found:
        total += int(series["values"][0][1])
    return total


@dataclass
class RunningCollector:
    proc: subprocess.Popen[bytes]
    http_port: int
    log: Path
    influx: InfluxSettings
    # One kept-alive connection: a new client per poll cost this process ~1 s of CPU per
    # 100,000 messages, taken from the two cores the collector is measured on.
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))

    def metrics(self) -> dict[str, float]:
        try:
            text = self.http.get(f"http://127.0.0.1:{self.http_port}/metrics").text
        except httpx.TimeoutException:
            print("(the collector's /metrics did not answer within 30 s)", flush=True)
            return {}
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def wait_stored(self, count: int, timeout_s: float = 600) -> float:
        """Epoch seconds at which all ``count`` readings were stored.

        The collector's own counter is polled (a count query in InfluxDB every few
        milliseconds would load the server being measured); InfluxDB is then asked whether
        it really holds them all, and if it did not yet, the time it did counts instead.
        """
        deadline = time.time() + timeout_s
        started = time.time()
        while (now_stored := self.metrics().get("smartunit_readings_stored_total", 0)) < count:
            if time.time() > deadline:
                raise SystemExit(f"the collector stored fewer than {count} readings")
            # Poll rarely while far from done, every 5 ms near the end: the clock stops
            # within a few ms of the truth without the polling loading the collector.
            rate = now_stored / max(time.time() - started, 1e-3)
            time.sleep(min(0.1, max(0.005, (count - now_stored) / max(rate, 1.0) / 4)))
        done = time.time()
        while stored(self.influx) < count:
            if time.time() > deadline:
                raise SystemExit(f"only {stored(self.influx)} of {count} readings in InfluxDB")
            time.sleep(0.1)
            done = time.time()
        return done

    def connected_at(self) -> float:
        """Epoch seconds of the collector's last "MQTT connected" log line."""
        stamps = [
            datetime.fromisoformat(orjson.loads(line)["ts"].replace("Z", "+00:00")).timestamp()
            for line in self.log.read_text().splitlines()
            if line.startswith("{") and '"MQTT connected"' in line
        ]
        return stamps[-1]

    def stop(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            stop_process(self.proc)


STARTED: list[RunningCollector] = []  # stopped at the end whatever happens


def start_collector(
    workdir: Path,
    broker: Mosquitto,
    influxdb: InfluxDB,
    database: str,
    registry: Path,
    client_id: str,
    *,
    extra_config: str = "",
) -> RunningCollector:
    config = workdir / f"{database}.toml"
    config.write_text(
        f'[mqtt]\nclient_id = "{client_id}"\n[registry]\npath = "{registry}"\n'
        f'[detection]\nrules = ["{PRESETS}"]\n'
        '[ingest]\npublish_rejections = true\n[logging]\nlevel = "info"\n' + extra_config
    )
    http_port = free_port()
    env = {
        **os.environ,
        "SMARTUNIT_MQTT_URL": broker.url,
        "SMARTUNIT_INFLUX_URL": influxdb.url,
        "SMARTUNIT_INFLUX_DB": database,
        "SMARTUNIT_DATA_DIR": str(workdir / f"{database}-data"),
        "SMARTUNIT_HTTP_PORT": str(http_port),
    }
    log = workdir / f"{database}.log"
    proc = spawn(
        [sys.executable, "-m", "collector.cli", "run", "--config", str(config)],
        env=env,
        log_path=log,
    )
    wait_for_collector(broker.url, client_id)
    influx = InfluxSettings(url=influxdb.url, database=database)
    STARTED.append(RunningCollector(proc, http_port, log, influx))
    return STARTED[-1]


def drained(
    workdir: Path,
    broker: Mosquitto,
    influxdb: InfluxDB,
    registry: Path,
    database: str,
    batch: list[tuple[str, bytes]],
    readings: int,
) -> tuple[float, RunningCollector, int]:
    """Queue ``batch`` for a collector's session, then let it drain; readings/s."""
    client_id = f"bench-{database}"
    start_collector(workdir, broker, influxdb, database, registry, client_id).stop()
    blast(broker.port, batch, f"bench-pub-{time.time_ns()}")
    collector = start_collector(workdir, broker, influxdb, database, registry, client_id)
    rss_before = collector.rss_bytes()
    done = collector.wait_stored(readings)
    rate = readings / (done - collector.connected_at())  # queued messages flow at connect
    return rate, collector, rss_before


class WebhookReceiver:
    """A dispatch receiver in this process: when each gas alert's webhook arrived."""

    def __init__(self, detector: str) -> None:
        self.arrived: dict[str, float] = {}  # device -> epoch seconds
        arrived, lock = self.arrived, threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as work-order systems serve

            def do_POST(self) -> None:
                at = time.time()
                body = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
                alert = body["alert"]
                if alert["detector"] == detector:
                    with lock:
                        arrived.setdefault(alert["device"], at)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def alert_latencies(
    workdir: Path,
    broker: Mosquitto,
    influxdb: InfluxDB,
    registry: Path,
    devices: list[tuple[str, str]],
    rate: float,
    triggers: int = 500,  # the p99 is then the 5th-worst, not the 2nd-worst of 200
    warmup: int = 5,
) -> list[float]:
    """Milliseconds from publishing a level-1 gas reading to its webhook, under load.

    Steady state, as a command centre lives in: the gas sensors cross the threshold once
    the background fleet has reported for ``settle_s`` (every series known to the
    detectors), and the first ``warmup`` alerts are not counted: they pay once for what
    every later one finds ready (the receiver's connection, the rule's state).
    """
    gas = [d for family, d in devices if family == "chem"][: warmup + triggers]
    background = [(f, d) for f, d in devices if d not in set(gas)]
    receiver = WebhookReceiver("combustible-gas")
    hook = (
        f'[[alerts.receivers]]\nname = "bench"\nurl = "{receiver.url}"\n'
        'families = ["chem"]\nmin_colour = "orange"\ngroup_incidents = false\n'
    )
    collector = start_collector(
        workdir, broker, influxdb, "bench_alerts", registry, "bench-alerts", extra_config=hook
    )
    spacing_s = 0.1
    settle_s = 5.0  # every background device has reported and its series are known
    # the publisher builds its packets first (seconds): the load runs on past the triggers
    duration_s = settle_s + (warmup + triggers) * spacing_s + 15.0
    load = messages(
        background, round(rate * duration_s), seed=11, start=time.time(), spacing_s=1 / rate
    )
    published: dict[str, float] = {}
    # This process holds the earlier phases' messages (millions of objects): a full garbage
    # collection of them took 300-400 ms, and a webhook arriving meanwhile waited for it
    # (measured: p99 393 ms with that heap, 57-81 ms without). Frozen, they are not scanned.
    gc.collect()
    gc.freeze()
    # A process of its own: the load must not hold this one's GIL while a webhook arrives.
    sender = multiprocessing.get_context("fork").Process(
        target=blast, args=(broker.port, load, "bench-load"), kwargs={"rate": rate}
    )
    sender.start()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-gas")
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    settled = rate * settle_s  # messages the collector has taken in before the first trigger
    poll_until = time.time() + 120
    while collector.metrics().get("smartunit_messages_received_total", 0) < settled:
        if time.time() > poll_until:
            raise SystemExit("the background load did not arrive")
        time.sleep(0.1)
    for device in gas:
        now = time.time()
        # Level 1 (25 % LEL) held for 6 s of device time: the second reading raises it.
        before = {"ts": round(now - 6, 3), "readings": {"lel_pct": 60.0}}
        client.publish(f"smartunit/v1/chem/{device}/data", orjson.dumps(before), qos=1)
        published[device] = time.time()
        body = {"ts": round(now, 3), "readings": {"lel_pct": 60.0}}
        client.publish(f"smartunit/v1/chem/{device}/data", orjson.dumps(body), qos=1)
        time.sleep(spacing_s)
    sender.join(120)
    deadline = time.time() + 30
    while len(receiver.arrived) < len(gas) and time.time() < deadline:
        time.sleep(0.1)
    client.loop_stop()
    client.disconnect()
    collector.stop()
    receiver.close()
    gc.unfreeze()
    missing = set(gas) - set(receiver.arrived)
    if missing:
        raise SystemExit(f"no webhook for {len(missing)} of {len(gas)} gas alerts")
    return [(receiver.arrived[d] - published[d]) * 1000 for d in gas[warmup:]]


def naive_live(
    broker: Mosquitto, influxdb: InfluxDB, batch: list[tuple[str, bytes]], number: int
) -> float:
    """The naive baseline in its own process, taking ``batch`` while it is published."""
    session, database = f"bench-naive-live{number}", f"bench_naive_live{number}"
    naive.run_register(broker.port, session)
    root = Path(__file__).resolve().parent.parent
    code = (
        f"import sys; sys.path.insert(0, {str(root)!r}); from bench import naive; "
        f"naive.run({broker.port}, {session!r}, {influxdb.url!r}, {database!r}, {len(batch)})"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    time.sleep(2)  # connected and waiting
    return timed_live(broker, batch, proc, session)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3, help="live rounds (median taken)")
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
                f"(camera/parking/chem {FAMILY_SHARE}), QoS 1, one reading per message",
                flush=True,
            )

            # drain: the reference and the naive baseline get the same N queued messages
            register_session(broker, "bench-ref")
            naive.run_register(broker.port, "bench-naive")
            drain_rate, collector, rss_before = drained(
                workdir, broker, influxdb, registry, "bench_drain", batch, n
            )
            metrics = collector.metrics()
            series = int(metrics["smartunit_detector_series"])
            grown = collector.rss_bytes() - rss_before
            collector.stop()
            ref_rate = broker_drain_rate(broker, "bench-ref", n)
            naive_rate = naive.run(broker.port, "bench-naive", influxdb.url, "bench_naive", n)
            for drained_session in ("bench-ref", "bench-naive", "bench-bench_drain"):
                register_session(broker, drained_session, clean=True)
            print(f"drain: collector {drain_rate:.0f}/s, broker {ref_rate:.0f}/s", flush=True)

            # live: a publisher sends while the subscriber runs; rounds of all three
            rounds = [
                live_round(workdir, broker, influxdb, registry, devices, n, number)
                for number in range(1, args.rounds + 1)
            ]
            live_ref_rate, live_rate, naive_live_rate = (
                statistics.median(r[i] for r in rounds) for i in range(3)
            )
            ratios_vs_broker = [collector_rate / ref for ref, collector_rate, _ in rounds]
            ratios_vs_naive = [collector_rate / naive for _, collector_rate, naive in rounds]

            # backlog arrays of 20 readings per message
            arrays = backlog_arrays(devices, n)
            array_rate, collector, _ = drained(
                workdir, broker, influxdb, registry, "bench_arrays", arrays, n
            )
            collector.stop()
            register_session(broker, "bench-bench_arrays", clean=True)

            # alert latency at half the sustained live rate
            latencies = alert_latencies(workdir, broker, influxdb, registry, devices, live_rate / 2)
        finally:
            for running in STARTED:
                running.stop()
            influxdb.stop()
            broker.stop()

    p50, p99 = statistics.median(latencies), percentile(latencies, 99)
    print(f"broker -> mosquitto_sub, drain of queued QoS 1:   {ref_rate:10.0f} msg/s")
    print(f"broker -> collector -> InfluxDB, drain:           {drain_rate:10.0f} msg/s")
    print(f"naive baseline (aiomqtt + json + HTTP), drain:    {naive_rate:10.0f} msg/s")
    rate_unit = f"msg/s (median of {len(rounds)} rounds)"
    print(f"live: publisher -> mosquitto_sub:                 {live_ref_rate:10.0f} {rate_unit}")
    print(f"live: publisher -> collector -> InfluxDB:         {live_rate:10.0f} {rate_unit}")
    print(f"live: publisher -> naive baseline -> InfluxDB:    {naive_live_rate:10.0f} {rate_unit}")
    for number, (ref, collector_rate, naive_rate_live) in enumerate(rounds, 1):
        print(
            f"  round {number}: broker {ref:.0f}, collector {collector_rate:.0f}, naive "
            f"{naive_rate_live:.0f} msg/s; ratios {collector_rate / ref:.3f} / "
            f"{collector_rate / naive_rate_live:.2f}"
        )
    print(f"backlog arrays of 20, drain:                      {array_rate:10.0f} readings/s")
    print(
        f"alert latency at {live_rate / 2:.0f} msg/s (half the live rate), publish -> "
        f"webhook, {len(latencies)} alerts: p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
        f"max {max(latencies):.1f} ms"
    )
    print(
        f"memory: {grown / 2**20:.1f} MiB grown over the drain for {series} detector series "
        f"= {grown / series * 10_000 / 2**20:.1f} MiB per 10,000 series"
    )
    print(
        f"drain_ratio_vs_broker={drain_rate / ref_rate:.3f} "
        f"drain_ratio_vs_naive={drain_rate / naive_rate:.2f}"
    )
    print(
        f"ratio_vs_broker={statistics.median(ratios_vs_broker):.3f} "
        f"ratio_vs_naive={statistics.median(ratios_vs_naive):.2f} alert_p99_ms={p99:.1f}"
    )


if __name__ == "__main__":
    main()
