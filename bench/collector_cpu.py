#!/usr/bin/env python3
"""CPU time the collector process spends per message, a figure that holds under load.

bench/ingest.py measures rates, which move with whatever else the machine runs. This
measures what the collector itself costs: the same workload (10,000 devices, the three
families, one reading per message, QoS 1) is published to a running ``smartunit run``
(the real process: decode, detectors, alert engine, InfluxDB writes, acknowledgements),
and the process's own CPU time (user + system, from /proc) from the first publish until
all N readings are stored is divided by N. ``--profile`` records the process with py-spy
meanwhile (a flame graph in SVG, speedscope JSON or collapsed stacks in .txt, by the file's
extension).

Usage: bench/collector_cpu.py [--messages N] [--repeat R] [--drain] [--profile out.svg]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ingest import (
    STARTED,
    fleet,
    messages,
    register_session,
    start_collector,
    write_registry,
)
from bench.mqttblast import blast
from fieldtools.localservices import InfluxDB, Mosquitto

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs (median taken)")
    parser.add_argument(
        "--drain", action="store_true", help="queue the messages first, then start the collector"
    )
    parser.add_argument("--profile", type=Path, help="py-spy output of the last run")
    args = parser.parse_args()
    n = args.messages
    results: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="smartunit-cpu-") as tmp:
        workdir = Path(tmp)
        broker = Mosquitto(workdir / "mosquitto", persistence=False).start()
        influxdb = InfluxDB(workdir / "influxdb").start()
        try:
            devices = fleet(10_000)
            registry = workdir / "registry.toml"
            write_registry(registry, devices)
            for run in range(1, args.repeat + 1):
                batch = messages(devices, n, seed=7 + run)
                database, session = f"cpu{run}", f"bench-cpu{run}"
                if args.drain:
                    start_collector(workdir, broker, influxdb, database, registry, session).stop()
                    blast(broker.port, batch, f"bench-pub-{time.time_ns()}")
                collector = start_collector(workdir, broker, influxdb, database, registry, session)
                pid = collector.proc.pid
                profiler = None
                if args.profile is not None and run == args.repeat:
                    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
                    kinds = {".json": "speedscope", ".txt": "raw"}
                    kind = kinds.get(args.profile.suffix, "flamegraph")
                    profiler = subprocess.Popen(
                        [
                            spy,
                            "record",
                            "-p",
                            str(pid),
                            "-o",
                            str(args.profile),
                            "-f",
                            kind,
                            "-r",
                            "250",
                            "--nonblocking",
                            *os.environ.get("PYSPY_EXTRA", "").split(),
                        ],
                        stdout=subprocess.DEVNULL,
                    )
                    time.sleep(1)
                servers = {"mosquitto": broker.proc.pid, "influxd": influxdb.proc.pid}
                servers_before = {name: cpu_seconds(p) for name, p in servers.items()}
                cpu_before, started = cpu_seconds(pid), time.time()
                if not args.drain:
                    blast(broker.port, batch, f"bench-pub-{time.time_ns()}")
                done = collector.wait_stored(n)
                cpu = cpu_seconds(pid) - cpu_before
                beside = ", ".join(
                    f"{name} {(cpu_seconds(p) - servers_before[name]) / n * 1e6:.1f}"
                    for name, p in servers.items()
                )
                if profiler is not None:
                    profiler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
                    profiler.wait(60)
                collector.stop()
                register_session(broker, session, clean=True)
                rate = n / (done - (collector.connected_at() if args.drain else started))
                results.append((cpu / n * 1e6, rate))
                print(
                    f"run {run}: {cpu / n * 1e6:.1f} µs CPU/message, {rate:.0f} msg/s "
                    f"(the servers' µs CPU/message meanwhile: {beside})",
                    flush=True,
                )
        finally:
            for running in STARTED:
                running.stop()
            influxdb.stop()
            broker.stop()
    cpu_us = statistics.median(r[0] for r in results)
    rate = statistics.median(r[1] for r in results)
    print(f"cpu_us_per_message={cpu_us:.1f} rate={rate:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
