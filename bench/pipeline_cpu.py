#!/usr/bin/env python3
"""The collector's work per message in one process, without the network: a fixed drain.

The real ``Collector`` (composition root, ingest, detectors with the shipped presets,
alerts on their SQLite store, the storage writer acknowledging in order) takes N
messages of bench/ingest.py's workload (10,000 devices, the three families, one reading
per message, QoS 1) from its inbox; the MQTT socket and InfluxDB are stood in for (the
inbox is filled directly, a write returns at once). What is left is the collector's own
Python work per message: routing, decoding, line encoding, detection, batching,
acknowledgement bookkeeping and garbage collection.

It prints the process's CPU time per message of the drain after a warm-up. CPU time
moves with the machine's load; instruction counts do not: run it under
``valgrind --tool=callgrind`` at two ``--messages`` counts with the same ``--warm``,
and the difference of the two totals over the difference of the counts is the
instructions per message.

Usage: bench/pipeline_cpu.py [--messages N] [--warm W]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ingest import PRESETS, fleet, messages, write_registry
from collector.app import Collector
from collector.config import Settings
from collector.influx import WriteResult
from collector.mqtt import Inbound
from collector.registry import Registry, RegistryHolder

ARRIVAL = 500  # messages put in the inbox at a time, as a socket read brings them


async def drain(workdir: Path, count: int, warm: int) -> float:
    devices = fleet(10_000)
    path = workdir / "registry.toml"
    write_registry(path, devices)
    settings = Settings.model_validate(
        {
            "data_dir": str(workdir / "data"),
            "registry": {"path": str(path)},
            "detection": {"rules": [str(PRESETS)], "warm_start_hours": 0},
            "http": {"enabled": False},
        }
    )
    collector = Collector(settings, RegistryHolder(Registry.load(path), path))
    source = collector.source
    started_up = asyncio.Event()
    source.start = started_up.set  # type: ignore[method-assign]
    source.publish = lambda *args, **kwargs: None  # type: ignore[method-assign]

    async def stored(lines: object) -> WriteResult:
        return WriteResult(written=len(lines))  # type: ignore[arg-type]

    async def nothing(*args: object, **kwargs: object) -> None:
        return None

    collector.influx.write_lines = stored  # type: ignore[assignment, method-assign]
    collector.influx.ensure_database = nothing  # type: ignore[method-assign]
    now_ms = time.time_ns() // 1_000_000
    inbound = [
        Inbound(topic, payload, i % 65535 + 1, 1, 1, now_ms, False)
        for i, (topic, payload) in enumerate(messages(devices, warm + count))
    ]
    stop = asyncio.Event()
    running = asyncio.create_task(collector.run(stop))
    await started_up.wait()

    async def take(part: list[Inbound], stored_before: int) -> None:
        for start in range(0, len(part), ARRIVAL):
            while source.backlog > 4 * ARRIVAL:  # arrivals as fast as the pipeline takes them
                await asyncio.sleep(0)
            source._inbox.extend(part[start : start + ARRIVAL])
            source._wakeup.set()
            await asyncio.sleep(0)
        while collector.stats.readings_stored < stored_before + len(part):
            await asyncio.sleep(0.001)

    # First sight of every device and series (routes, admission, detector state) is paid
    # once in a collector's life: a warm-up takes it before the measured drain.
    await take(inbound[:warm], 0)
    started = time.process_time()
    await take(inbound[warm:], warm)
    spent = time.process_time() - started
    stop.set()
    await running
    return spent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--warm", type=int, default=20_000, help="messages before measuring")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="smartunit-pipeline-") as tmp:
        spent = asyncio.run(drain(Path(tmp), args.messages, args.warm))
    print(f"pipeline_cpu_us_per_message={spent / args.messages * 1e6:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
