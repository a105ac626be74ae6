#!/usr/bin/env python3
"""The ceiling of a receive path that parses many MQTT packets per read (issue #6 study).

paho-mqtt handles one packet per loop turn with several small ``recv`` calls; here an
asyncio Protocol takes whatever the socket holds (up to 256 KiB), cuts every whole
PUBLISH out of it with memoryview slices and answers all their PUBACKs in one write.
Nothing is decoded: this measures only what receiving and acknowledging QoS 1 costs in
Python, against the broker's delivery to ``mosquitto_sub`` of the same queued messages,
measured in the same run. MQTT 3.1.1, benchmark-only code, not the collector.

Measured 2026-11-22 (100,000 messages, idle 2-core machine): mosquitto_sub 97,695 msg/s,
this receiver 343,213 msg/s (3.5x), while paho-mqtt alone drains 7-10k msg/s. Receiving
is not the limit once packets are parsed in bulk; the collector's own stages are
(bench/stages.py: ~37 µs per message).

Usage: bench/rawreceive.py [--messages N]
"""

from __future__ import annotations

import argparse
import asyncio
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ingest import fleet, messages
from bench.mqttblast import _utf8, blast, connect_packet
from collector.localservices import Mosquitto, find_binary

TOPIC = "smartunit/v1/+/+/data"


def subscribe_packet(topic: str) -> bytes:
    body = struct.pack("!H", 1) + _utf8(topic) + b"\x01"
    return b"\x82" + bytes([len(body)]) + body


def session_connect(client_id: str) -> bytes:
    packet = bytearray(connect_packet(client_id))
    packet[9] = 0x00  # connect flags: clean session off, so the broker queues for us
    return bytes(packet)


class Receiver(asyncio.Protocol):
    def __init__(self, expected: int, done: asyncio.Future[float]) -> None:
        self.expected, self.done = expected, done
        self.buffer = bytearray()
        self.received = 0
        self.payload_bytes = 0
        self.started = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if not self.started:
            self.started = time.perf_counter()
        buffer = self.buffer
        buffer += data
        view = memoryview(buffer)
        position, end = 0, len(buffer)
        acks = bytearray()
        while position + 2 <= end:
            kind = view[position]
            length, shift, cursor = 0, 0, position + 1
            while True:  # remaining length: up to four bytes, 7 bits each
                if cursor >= end:
                    break
                byte = view[cursor]
                length |= (byte & 0x7F) << shift
                cursor += 1
                if not byte & 0x80:
                    break
                shift += 7
            else:
                break
            if cursor + length > end or (cursor < end and view[cursor - 1] & 0x80):
                break  # a packet not whole yet
            if kind >> 4 == 3:  # PUBLISH
                topic_length = (view[cursor] << 8) | view[cursor + 1]
                body = cursor + 2 + topic_length
                if kind & 0x06:  # QoS 1: the packet id follows the topic
                    acks += b"\x40\x02" + bytes(view[body : body + 2])
                    body += 2
                self.payload_bytes += cursor + length - body
                self.received += 1
            position = cursor + length
        view.release()
        del buffer[:position]
        if acks and self.transport is not None:
            self.transport.write(bytes(acks))
        if self.received >= self.expected and not self.done.done():
            self.done.set_result(time.perf_counter() - self.started)


async def drain(port: int, client_id: str, expected: int) -> float:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[float] = loop.create_future()
    transport, _receiver = await loop.create_connection(
        lambda: Receiver(expected, done), "127.0.0.1", port
    )
    transport.write(session_connect(client_id))
    elapsed = await asyncio.wait_for(done, 600)
    transport.close()
    return expected / elapsed


async def make_session(port: int, client_id: str) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(session_connect(client_id) + subscribe_packet(TOPIC))
    await writer.drain()
    await reader.readexactly(4 + 5)  # CONNACK, SUBACK
    writer.write(b"\xe0\x00")
    writer.close()


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
    print(f"  bulk-parsing Python receiver, PUBACK batched: {raw:9,.0f} msg/s")
    print(f"raw_rate={raw:.0f} broker_rate={reference:.0f} ratio={raw / reference:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
