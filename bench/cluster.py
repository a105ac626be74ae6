#!/usr/bin/env python3
"""Cluster throughput: MQTT devices -> NATS gateway -> 1, 2 or 3 collectors -> InfluxDB.

Everything runs here, on real servers started for the run: a 3-node NATS cluster
(JetStream replicas 3, the MQTT gateway on each node, the partition mapping), InfluxDB
1.x and the real collector processes (``smartunit run``, transport "nats": decode, store,
detectors and alert engine on, alerts in each one's SQLite file). Each phase gets a fresh
cluster and database, so no phase inherits another's stream or consumers.

reference  the publishers alone: N readings published at QoS 1, spread over the three
           gateways, with the collectors' durable consumers in place but no collector
           running; the rate is first publish -> last PUBACK, what the gateways take
           (each PUBACK waits for the replicated store).
K = 1,2,3  K collectors own the partitions (leases spread, checked before the clock
           starts); the same publishers send N readings; the rate is first publish ->
           all N readings counted in InfluxDB. Each collector's CPU seconds over the
           phase (utime + stime from /proc/<pid>/stat) per reading it stored.

Every process shares this machine's cores: the figures are ratios between phases on
one machine, not a promise of linear speed-up (with 2 cores, 3 collectors, 3 NATS
servers, InfluxDB and the publishers contend).

Usage: bench/cluster.py [--messages N] [--devices D] [--partitions P] [--connections C]
                        [--collectors K] [--fetch-batch B]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import httpx
import nats
import nats.errors
import nats.js.errors

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ingest import PRESETS, fleet, messages, stored, write_registry
from bench.mqttblast import blast
from collector.config import InfluxSettings
from collector.natsleases import BUCKET
from fieldtools.demo import wait_for_collector
from fieldtools.localservices import InfluxDB, free_port, spawn, stop_process
from fieldtools.natscluster import NatsCluster

NODES = 3
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (fields 14 and 15 of /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass
class Collector:
    client_id: str
    proc: subprocess.Popen[bytes]
    http_port: int

    def readings_stored(self) -> int:
        text = httpx.get(f"http://127.0.0.1:{self.http_port}/metrics", timeout=30).text
        for line in text.splitlines():
            if line.startswith("smartunit_readings_stored_total "):
                return int(float(line.split()[1]))
        return 0


def start_collectors(
    count: int,
    cluster: NatsCluster,
    influxdb: InfluxDB,
    database: str,
    workdir: Path,
    args: argparse.Namespace,
) -> list[Collector]:
    registry = workdir / "registry.toml"
    fetch_batch = f"fetch_batch = {args.fetch_batch}\n" if args.fetch_batch else ""
    started = []
    for index in range(count):
        client_id = f"bench-{database}-{index + 1}"
        config = workdir / f"{client_id}.toml"
        config.write_text(
            f'transport = "nats"\n[mqtt]\nclient_id = "{client_id}"\n'
            f"[nats]\npartitions = {cluster.partitions}\n{fetch_batch}"
            f'[registry]\npath = "{registry}"\n[detection]\nrules = ["{PRESETS}"]\n'
        )
        http_port = free_port()
        env = {
            **os.environ,
            "SMARTUNIT_MQTT_URL": cluster.nodes[index % NODES].mqtt_url,
            "SMARTUNIT_NATS_URL": cluster.urls,
            "SMARTUNIT_INFLUX_URL": influxdb.url,
            "SMARTUNIT_INFLUX_DB": database,
            "SMARTUNIT_DATA_DIR": str(workdir / f"{client_id}-data"),
            "SMARTUNIT_HTTP_PORT": str(http_port),
        }
        command = [sys.executable, "-m", "collector.cli", "run", "--config", str(config)]
        proc = spawn(command, env=env, log_path=workdir / f"{client_id}.log")
        started.append(Collector(client_id, proc, http_port))
    for collector in started:
        wait_for_collector(cluster.nodes[0].mqtt_url, collector.client_id, timeout_s=120)
    return started


def owners(cluster: NatsCluster) -> dict[int, str]:
    async def read() -> dict[int, str]:
        client = await nats.connect(cluster.urls.split(","))
        try:
            kv = await client.jetstream().key_value(BUCKET)
            found = {}
            for key in await kv.keys():
                if key.startswith("owner."):
                    entry = await kv.get(key)
                    if entry.value:
                        found[int(key.split(".")[1])] = entry.value.decode()
            return found
        finally:
            await client.close()

    try:
        return asyncio.run(read())
    except (nats.errors.Error, nats.js.errors.Error, OSError):
        return {}


def wait_owned(cluster: NatsCluster, members: int, timeout_s: float = 120) -> None:
    """Until every partition has an owner and the share reached every collector."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = owners(cluster)
        if len(found) == cluster.partitions and len(set(found.values())) == members:
            return
        time.sleep(0.5)
    raise SystemExit(f"the partitions were not shared by {members} collectors in time")


def publish(cluster: NatsCluster, batch: list[tuple[str, bytes]], per_node: int) -> float:
    """Every message at QoS 1, each device on one connection (its order kept), the
    connections spread over the nodes; returns the seconds to the last PUBACK."""
    lanes: list[list[tuple[str, bytes]]] = [[] for _ in range(NODES * per_node)]
    for topic, payload in batch:
        lanes[zlib.crc32(topic.encode()) % len(lanes)].append((topic, payload))
    stamp = time.monotonic_ns()
    failures: list[Exception] = []

    def lane_publisher(lane: int) -> None:
        try:
            blast(cluster.nodes[lane % NODES].mqtt_port, lanes[lane], f"pub-{stamp}-{lane}")
        except (OSError, RuntimeError) as exc:
            failures.append(exc)

    threads = [
        threading.Thread(target=lane_publisher, args=(lane,))
        for lane in range(len(lanes))
        if lanes[lane]
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise SystemExit(f"a publisher failed: {failures[0]}")
    return time.perf_counter() - started


def wait_counted(influx: InfluxSettings, count: int, timeout_s: float = 900) -> float:
    """perf_counter() when InfluxDB holds all ``count`` readings."""
    deadline = time.monotonic() + timeout_s
    while (found := stored(influx)) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {found} of {count} readings in InfluxDB")
        time.sleep(0.2)
    return time.perf_counter()


def phase(
    workdir: Path,
    influxdb: InfluxDB,
    args: argparse.Namespace,
    batch: list[tuple[str, bytes]],
    collectors: int,
) -> tuple[float, list[tuple[str, int, float]]]:
    """(readings/s, per collector: (id, readings stored, CPU seconds)); 0 collectors:
    the reference, the publishers' rate to the last PUBACK."""
    database = f"k{collectors}"
    cluster = NatsCluster(workdir / f"nats-{database}", size=NODES, partitions=args.partitions)
    cluster.start()
    running: list[Collector] = []
    try:
        running = start_collectors(max(collectors, 1), cluster, influxdb, database, workdir, args)
        if collectors == 0:
            # the consumers stay (durable): the gateways store what they will read
            for collector in running:
                stop_process(collector.proc)
            seconds = publish(cluster, batch, args.connections)
            return len(batch) / seconds, []
        wait_owned(cluster, collectors)
        cpu_before = {c.client_id: cpu_seconds(c.proc.pid) for c in running}
        started = time.perf_counter()
        publish(cluster, batch, args.connections)
        done = wait_counted(InfluxSettings(url=influxdb.url, database=database), len(batch))
        per_collector = [
            (c.client_id, c.readings_stored(), cpu_seconds(c.proc.pid) - cpu_before[c.client_id])
            for c in running
        ]
        return len(batch) / (done - started), per_collector
    finally:
        for collector in running:
            stop_process(collector.proc)
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--messages", type=int, default=60_000)
    parser.add_argument("--devices", type=int, default=3_000)
    parser.add_argument("--partitions", type=int, default=64)
    parser.add_argument("--connections", type=int, default=2, help="publisher connections per node")
    parser.add_argument(
        "--collectors", type=int, default=3, help="phases with 1 up to this many collectors"
    )
    parser.add_argument("--fetch-batch", type=int, help="nats.fetch_batch (the default if not)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="smartunit-bench-cluster-") as tmp:
        workdir = Path(tmp)
        influxdb = InfluxDB(workdir / "influxdb").start()
        try:
            devices = fleet(args.devices)
            write_registry(workdir / "registry.toml", devices)
            print(
                f"workload: {args.messages} readings from {len(devices)} devices, QoS 1, "
                f"{args.connections * NODES} publisher connections over {NODES} gateways, "
                f"{args.partitions} partitions, JetStream replicas 3; {os.cpu_count()} cores",
                flush=True,
            )
            reference, _ = phase(workdir, influxdb, args, messages(devices, args.messages), 0)
            print(f"reference: gateways alone {reference:.0f} readings/s (to the last PUBACK)")
            results = {}
            for count in range(1, args.collectors + 1):
                # the same readings each phase, timed to end as it starts: readings of
                # minutes ago would be judged as a backlog (silence checks wait)
                batch = messages(devices, args.messages)
                rate, per_collector = phase(workdir, influxdb, args, batch, count)
                results[count] = (rate, per_collector)
                one_rate, one_cpu = results[1][0], _cpu_per_reading(results[1][1])
                cpu = _cpu_per_reading(per_collector)
                print(
                    f"{count} collector(s): {rate:.0f} readings/s end to end "
                    f"(x{rate / one_rate:.2f} of 1, {rate / reference:.2f} of the gateways'), "
                    f"{cpu * 1e6:.0f} CPU-us per reading (x{cpu / one_cpu:.2f} of 1)",
                    flush=True,
                )
                for client_id, readings, seconds in per_collector:
                    each = seconds / readings * 1e6 if readings else float("nan")
                    print(
                        f"    {client_id}: {readings} readings, {seconds:.2f} CPU-s, "
                        f"{each:.0f} CPU-us per reading",
                        flush=True,
                    )
        finally:
            influxdb.stop()


def _cpu_per_reading(per_collector: list[tuple[str, int, float]]) -> float:
    readings = sum(r for _, r, _ in per_collector)
    return sum(s for _, _, s in per_collector) / max(readings, 1)


if __name__ == "__main__":
    main()
