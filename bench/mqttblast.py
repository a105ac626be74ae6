"""A minimal MQTT 3.1.1 QoS 1 publisher for benchmarks: pre-encoded packets, one socket.

paho-mqtt publishes about 4,000 QoS 1 messages/s here from one thread, too slow to load
the broker; this sends pre-built PUBLISH packets in large writes and counts PUBACKs on a
reader thread, keeping fewer than 65,535 packet ids in flight. Benchmark-only code.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Sequence

from collector.mqttwire import encode_varint

_WINDOW = 30_000  # unacknowledged packet ids in flight; ids 1..65535 are reused after


def _utf8(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


def connect_packet(client_id: str) -> bytes:
    body = _utf8("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 60) + _utf8(client_id)
    return b"\x10" + encode_varint(len(body)) + body


def publish_packet(topic: str, payload: bytes, packet_id: int) -> bytes:
    body = _utf8(topic) + struct.pack("!H", packet_id) + payload
    return b"\x32" + encode_varint(len(body)) + body


def blast(
    port: int,
    messages: Sequence[tuple[str, bytes]],
    client_id: str,
    *,
    rate: float | None = None,
) -> float:
    """Publish every message at QoS 1 and wait for all PUBACKs; returns messages/s.

    With ``rate``, publish at that many messages per second (in 5 ms slices) instead of
    as fast as the broker takes them.
    """
    packets = [publish_packet(t, p, i % 65535 + 1) for i, (t, p) in enumerate(messages)]
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(connect_packet(client_id))
    connack = sock.recv(4)
    if len(connack) != 4 or connack[0] != 0x20 or connack[3] != 0:
        raise RuntimeError(f"broker refused the connection: {connack!r}")
    acked = 0
    all_acked = threading.Event()

    def read_acks() -> None:
        nonlocal acked
        pending = b""
        while acked < len(packets):
            chunk = sock.recv(65536)
            if not chunk:
                break
            pending += chunk
            whole = len(pending) // 4  # PUBACK is 4 bytes: 0x40 0x02 id id
            acked += whole
            pending = pending[whole * 4 :]
        all_acked.set()

    reader = threading.Thread(target=read_acks, daemon=True)
    started = time.perf_counter()
    reader.start()
    sent = 0
    while sent < len(packets):
        while sent - acked >= _WINDOW:
            time.sleep(0.0005)
        step = 1000
        if rate is not None:
            step = max(1, round(rate / 200))
            ahead = sent / rate - (time.perf_counter() - started)
            if ahead > 0:
                time.sleep(ahead)
        upto = min(sent + step, len(packets), acked + _WINDOW)
        sock.sendall(b"".join(packets[sent:upto]))
        sent = upto
    all_acked.wait(600)
    elapsed = time.perf_counter() - started
    sock.sendall(b"\xe0\x00")  # DISCONNECT
    sock.close()
    if acked < len(packets):
        raise RuntimeError(f"only {acked} of {len(packets)} publishes acknowledged")
    return len(packets) / elapsed
