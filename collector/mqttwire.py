"""The MQTT v5 wire format the bulk receiver speaks: the packets it sends, whole.

Only what the collector uses (collector/mqttbulk.py says what that is): CONNECT with a
last will and session properties, SUBSCRIBE, PUBLISH at QoS 0/1, and reading one whole
packet from a stream. Inbound PUBLISH packets are cut out of the read buffer by the
receiver itself, where the cost per message counts.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Collection, Sequence

from collector.config import MqttSettings

CONNACK, PUBLISH, PUBACK, SUBACK, PINGRESP, DISCONNECT = 2, 3, 4, 9, 13, 14
PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"  # reason 0, normal disconnection: the will is not sent
PUBACK_WORD = 0x40020000  # a PUBACK's first byte and remaining length, before its id
SUBSCRIBE_QOS1_NO_LOCAL = b"\x05"  # subscription options: QoS 1, bit 2 no-local (MQTT v5)


def encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def string(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("!H", len(raw)) + raw


def packet(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + encode_varint(len(body)) + body


def connect_packet(settings: MqttSettings, *, will_topic: str, will: bytes) -> bytes:
    """CONNECT: a persistent session (clean start off), the retained QoS 1 will."""
    endpoint = settings.endpoint
    flags = 0x04 | 0x08 | 0x20  # will, will QoS 1, will retain; clean start off
    payload = string(settings.client_id) + b"\x00" + string(will_topic) + string(will)
    if endpoint.username is not None:
        flags |= 0x80
    if endpoint.password is not None:
        flags |= 0x40
    if endpoint.username is not None:
        payload += string(endpoint.username)
    if endpoint.password is not None:
        payload += string(endpoint.password.get_secret_value())
    properties = b"\x11" + struct.pack("!I", settings.session_expiry_s)
    properties += b"\x21" + struct.pack("!H", settings.receive_maximum)
    head = string("MQTT") + bytes([5, flags]) + struct.pack("!H", settings.keepalive_s)
    return packet(0x10, head + encode_varint(len(properties)) + properties + payload)


def subscribe_packet(packet_id: int, topics: Sequence[str], no_local: Collection[str]) -> bytes:
    """SUBSCRIBE at QoS 1; ``no_local`` topics do not bring back our own publishes."""
    body = struct.pack("!H", packet_id) + b"\x00"
    body += b"".join(
        string(topic) + (SUBSCRIBE_QOS1_NO_LOCAL if topic in no_local else b"\x01")
        for topic in topics
    )
    return packet(0x82, body)


def publish_packet(
    topic: str, payload: bytes, qos: int, retain: bool, packet_id: int, *, dup: bool
) -> bytes:
    first = 0x30 | (qos << 1) | int(retain) | (0x08 if dup else 0)
    body = string(topic) + (struct.pack("!H", packet_id) if qos else b"") + b"\x00"
    return packet(first, body + payload)


def puback_packets(packet_ids: Sequence[int]) -> bytes:
    """PUBACKs for these packets, in this order, as one write."""
    # A PUBACK without a reason is 0x40 0x02 and the packet id: one big-endian 32-bit
    # word each, packed in one call (this runs for every message received).
    return struct.pack(f"!{len(packet_ids)}I", *[PUBACK_WORD | mid for mid in packet_ids])


async def read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One whole packet: its first byte and its body."""
    first = (await reader.readexactly(1))[0]
    length, shift = 0, 0
    while True:
        byte = (await reader.readexactly(1))[0]
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
    return first, await reader.readexactly(length)
