#!/usr/bin/env python3
"""The collector's MQTT receiver alone, against the broker's own delivery rate.

paho-mqtt handles one packet per loop turn with several small ``recv`` calls; the
collector's receiver (collector/mqttbulk.py, MQTT v5) takes whatever the socket holds,
cuts every whole PUBLISH out of it and acknowledges a batch with one write. Nothing is
decoded: this measures what receiving and acknowledging QoS 1 costs, against the
broker's delivery to ``mosquitto_sub`` of the same queued messages, in the same run.

Measured 2026-11-22 (100,000 messages, idle 2-core machine): mosquitto_sub 92,633
msg/s, the collector's receiver 267,768 msg/s (2.9x), while paho-mqtt alone drains
7-10k msg/s. Receiving is not the limit; the collector's own stages are
(bench/stages.py: ~37 µs per message).

Usage: bench/rawreceive.py [--messages N]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ingest import fleet, messages
from bench.mqttblast import blast
from collector.config import MqttSettings
from collector.mqttbulk import BulkMqttSource
from fieldtools.localservices import Mosquitto, find_binary

TOPIC = "smartunit/v1/+/+/data"


def receiver(port: int, client_id: str) -> BulkMqttSource:
    settings = MqttSettings(url=f"mqtt://127.0.0.1:{port}", client_id=client_id)
    return BulkMqttSource(settings, [TOPIC], status_topic=f"bench/{client_id}/status")


async def drain(port: int, client_id: str, expected: int) -> float:
    """The collector's receiver (collector/mqttbulk.py) takes and acknowledges them all."""
    source = receiver(port, client_id)
    source.start()
    taken, started = 0, 0.0
    while taken < expected:
        await source.wait(5.0)
        messages = source.drain(expected)
        if messages and not started:
            started = time.perf_counter()
        taken += sum(m.topic != source.status_topic for m in messages)
        source.ack(messages)
    elapsed = time.perf_counter() - started
    await source.aclose()
    return expected / elapsed


async def make_session(port: int, client_id: str) -> None:
    """Subscribe once and leave: the broker queues for the session from then on."""
    source = receiver(port, client_id)
    source.start()
    while not source.connected.is_set():
        await asyncio.sleep(0.02)
    await source.aclose()


def mosquitto_sub_rate(port: int, client_id: str, expected: int) -> float:
    command = [
        find_binary("mosquitto_sub"), "-p", str(port), "-i", client_id, "-c", "-q", "1",
        "-t", TOPIC, "-C", str(expected),
    ]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, check=True, timeout=600)
    return expected / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    args = parser.parse_args()
    batch = messages(fleet(10_000), args.messages)
    with tempfile.TemporaryDirectory() as scratch:
        broker = Mosquitto(Path(scratch) / "mosquitto", persistence=False).start()
        try:
            asyncio.run(make_session(broker.port, "raw-receiver"))
            subprocess.run(
                [find_binary("mosquitto_sub"), "-p", str(broker.port), "-i", "ref-sub", "-c",
                 "-q", "1", "-t", TOPIC, "-E"],
                check=True, timeout=30,
            )  # fmt: skip
            blast(broker.port, batch, "raw-bench-pub")
            reference = mosquitto_sub_rate(broker.port, "ref-sub", len(batch))
            raw = asyncio.run(drain(broker.port, "raw-receiver", len(batch)))
        finally:
            broker.stop()
    print(f"{len(batch)} queued QoS 1 messages, drained by one subscriber each")
    print(f"  mosquitto_sub (the broker's delivery rate):   {reference:9,.0f} msg/s")
    print(f"  collector's receiver (mqttbulk), PUBACKs batched: {raw:9,.0f} msg/s")
    print(f"raw_rate={raw:.0f} broker_rate={reference:.0f} ratio={raw / reference:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
