#!/usr/bin/env python3
"""Where the collector's time goes, per message: each in-process stage of the pipeline alone.

The same workload as bench/ingest.py (10,000 devices, the three families, one reading
per message) goes through each stage on its own, in this process, so the stages can be
compared with each other and with the budget the throughput target leaves: at 60 % of
the broker's single-subscriber rate, every stage of a message together has ~20 µs.

- json: ``orjson.loads`` of the payload alone (the floor of any decoder);
- decode: ``FastDecoder.decode``, the collector's entry point: topic, JSON, validation,
  placement and the line-protocol line of each reading;
- detect: ``DetectionEngine.process`` on batches of 5,000 with the shipped presets.

For reference (not in the total) it also times the definition the fast path defers to:
``Decoder.decode`` (pydantic) plus ``reading_line``, the path every message took before.

Usage: bench/stages.py [--messages N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ingest import PRESETS, fleet, messages, write_registry
from collector.detection import DetectionEngine
from collector.fastpath import Encoded, FastDecoder
from collector.protocol import Decoded, Decoder, reading_line
from collector.registry import Registry
from collector.rules import RuleBook


def per_message_us(seconds: float, count: int) -> float:
    return seconds / count * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    args = parser.parse_args()
    devices = fleet(10_000)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "registry.toml"
        write_registry(path, devices)
        registry = Registry.load(path)
    batch = messages(devices, args.messages)
    received_ms = int(time.time() * 1000)
    figures: dict[str, float] = {}

    started = time.perf_counter()
    for _, payload in batch:
        orjson.loads(payload)
    figures["json"] = per_message_us(time.perf_counter() - started, len(batch))

    decoder = FastDecoder(Decoder())
    started = time.perf_counter()
    decoded = [decoder.decode(topic, payload, received_ms, registry) for topic, payload in batch]
    figures["decode"] = per_message_us(time.perf_counter() - started, len(batch))
    readings = [r for d in decoded if isinstance(d, Encoded) for r in d.readings]
    assert len(readings) == len(batch), "every bench message is valid"

    started = time.perf_counter()
    for topic, payload in batch:
        slow = decoder.decoder.decode(topic, payload, received_ms, registry)
        assert isinstance(slow, Decoded)
        for reading in slow.readings:
            reading_line(reading, registry)
    reference = per_message_us(time.perf_counter() - started, len(batch))

    engine = DetectionEngine(RuleBook.load([PRESETS]))
    started = time.perf_counter()
    for k in range(0, len(readings), 5000):
        engine.process(readings[k : k + 5000], registry)
    figures["detect"] = per_message_us(time.perf_counter() - started, len(batch))

    total = sum(figures.values()) - figures["json"]  # json is inside decode
    print(f"{len(batch)} messages from {len(devices)} devices, one reading each, one core")
    for name, value in figures.items():
        print(f"  {name:8s} {value:7.2f} µs/message")
    print(f"  {'total':8s} {total:7.2f} µs/message -> {1e6 / total:,.0f} messages/s in-process")
    print(f"  (pydantic Decoder + reading_line, the slow path: {reference:.2f} µs/message)")
    print(" ".join(f"{k}_us={v:.2f}" for k, v in figures.items()) + f" total_us={total:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
