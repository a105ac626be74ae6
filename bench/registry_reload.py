#!/usr/bin/env python3
"""How long a registry reload holds up the event loop, with a large fleet.

A probe task sleeps 1 ms on the loop over and over; its lag (how late each wake-up is)
is what every other task on the loop (ingest, alerting, ``/healthz``) would wait. The
registry of bench/ingest.py, scaled to ``--devices``, is reloaded twice:

- on the loop: ``RegistryHolder.reload_now()`` called from a coroutine;
- off the loop: the collector's ``RegistryHolder.watch``, asked to reload at once
  (as SIGHUP does): parsed and validated in a worker thread, swapped on the loop.

It then times the full garbage collection the collector runs once a new registry is in
force (``Collector._freeze_long_lived``), also on the loop.

Usage: bench/registry_reload.py [--devices N]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ingest import fleet, write_registry
from collector.registry import RegistryHolder

PROBE_S = 0.001


async def lag_during(action: Callable[[], Awaitable[None]]) -> tuple[float, float, float]:
    """(seconds the action took, worst probe lag, 99th percentile lag), in seconds."""
    lags: list[float] = []
    done = asyncio.Event()

    async def probe() -> None:
        while not done.is_set():
            start = time.perf_counter()
            await asyncio.sleep(PROBE_S)
            lags.append(time.perf_counter() - start - PROBE_S)

    prober = asyncio.create_task(probe())
    await asyncio.sleep(0.05)
    lags.clear()
    start = time.perf_counter()
    await action()
    took = time.perf_counter() - start
    done.set()
    await prober
    lags.sort()
    p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))] if lags else 0.0
    return took, (lags[-1] if lags else 0.0), p99


async def run(devices: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "registry.toml"
        write_registry(path, fleet(devices))
        start = time.perf_counter()
        holder = RegistryHolder(RegistryHolder.load(path, allow_empty=False), path)
        print(
            f"{len(holder.current.devices)} devices, first load {time.perf_counter() - start:.2f} s"
        )

        async def on_loop() -> None:
            path.touch()
            holder.reload_now()

        async def off_loop() -> None:
            before = holder.reloads
            path.touch()
            holder.request_reload()
            while holder.reloads == before:
                await asyncio.sleep(0.01)

        async def full_collection() -> None:
            gc.collect()

        watcher = asyncio.create_task(holder.watch(3600.0))
        for name, action in (
            ("reload on the loop", on_loop),
            ("reload off the loop (watch)", off_loop),
            ("gc.collect() after a reload", full_collection),
        ):
            took, worst, p99 = await lag_during(action)
            print(
                f"{name:30s} took {took:6.2f} s; loop lag worst {worst * 1000:7.1f} ms, "
                f"p99 {p99 * 1000:6.1f} ms"
            )
        watcher.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=100_000)
    args = parser.parse_args()
    asyncio.run(run(args.devices))


if __name__ == "__main__":
    main()
