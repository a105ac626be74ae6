"""The bulk receiver's packet parser: every PUBLISH cut out whole and exact, however the
socket splits the stream, with or without v5 properties, short or long."""

from __future__ import annotations

import asyncio
import struct

from collector.config import MqttSettings
from collector.mqtt import Inbound
from collector.mqttbulk import BulkMqttSource
from collector.mqttwire import encode_varint, packet, string


def publish(topic: str, payload: bytes, *, qos: int, retain: bool, mid: int, props: bytes) -> bytes:
    body = string(topic) + (struct.pack("!H", mid) if qos else b"")
    return packet(
        0x30 | (qos << 1) | int(retain), body + encode_varint(len(props)) + props + payload
    )


# user property ("k", "v") and a message expiry interval: skipped, never part of the payload
PROPERTIES = b"\x26" + string("k") + string("v") + b"\x02\x00\x00\x00\x3c"
CASES = [
    ("smartunit/v1/camera/cam-1/data", b'{"people":1}', 1, False, 7, b""),
    ("smartunit/v1/chem/gas-1/data", b'{"readings":{"x":1.5}}', 1, False, 65535, PROPERTIES),
    ("smartunit/v1/parking/lot-1/status", b"online", 0, True, 0, b""),
    ("smartunit/v1/chem/gas-2/data", b"x" * 300, 1, False, 1, b""),  # two length bytes
    ("smartunit/v1/chem/gas-3/data", b"y" * 20_000, 1, True, 2, PROPERTIES),  # three
    ("smartunit/v1/caméra/c\u00e9-1/data", b"", 1, False, 3, b""),  # UTF-8 topic, no payload
]


def parse_in_pieces(stream: bytes, piece: int) -> list[Inbound]:
    source = BulkMqttSource(
        MqttSettings(url="mqtt://127.0.0.1:1", client_id="parse"), ["#"], status_topic="s"
    )
    source._loop = asyncio.new_event_loop()
    buffer = bytearray()
    for start in range(0, len(stream), piece):
        buffer += stream[start : start + piece]
        del buffer[: source._parse(buffer)]
    assert not buffer
    source._loop.close()
    return list(source._inbox)


def test_every_publish_is_cut_out_exactly_however_the_stream_is_split() -> None:
    stream = b"".join(
        publish(topic, payload, qos=qos, retain=retain, mid=mid, props=props)
        for topic, payload, qos, retain, mid, props in CASES
    )
    expected = [
        (topic, payload, mid, qos, retain) for topic, payload, qos, retain, mid, props in CASES
    ]
    for piece in (1, 2, 3, 7, 64, 1000, len(stream)):
        got = parse_in_pieces(stream, piece)
        assert [(m.topic, m.payload, m.mid, m.qos, m.retained) for m in got] == expected, piece
        assert all(type(m) is Inbound and type(m.payload) is bytes for m in got)
