"""Decoding rules of device protocol v1 (pure, no servers)."""

from __future__ import annotations

import json
import time

import pytest

from collector.protocol import Decoded, Decoder, Rejection, parse_topic, reading_line
from collector.registry import Registry
from scripts.gen_schemas import SCHEMA_DIR, schemas

NOW_MS = int(time.time() * 1000)
REGISTRY = Registry.from_mapping(
    {
        "units": {
            "lot": {
                "hierarchy": {
                    "city": "c",
                    "district": "d",
                    "street": "s",
                    "community": "m",
                    "grid": "g",
                },
                "capacity": 100,
            }
        },
        "devices": {"park-1": {"unit": "lot", "family": "parking"}},
    }
)


def decode(topic: str, payload: object, received_ms: int = NOW_MS) -> Decoded | Rejection:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return Decoder().decode(topic, raw, received_ms, REGISTRY)


@pytest.mark.parametrize(
    "device",
    [
        "cam\n1",
        "cam 1",
        "cam,1",
        'cam"1',
        "cam=1",
        "摄像头",
        "",
        "-lead",
        "x" * 65,
        "cam\\1",
        "cam/1",
    ],
)
def test_hostile_device_ids_are_rejected(device: str) -> None:
    result = parse_topic(f"smartunit/v1/camera/{device}/data")
    assert isinstance(result, Rejection)
    assert result.reason in {"bad_device_id", "bad_topic"}


def test_good_objects_survive_a_bad_neighbour() -> None:
    result = decode(
        "smartunit/v1/camera/cam-1/data",
        [{"people": 1}, {"people": -1}, {"vehicles": 2, "ts": NOW_MS / 1000 - 5}],
    )
    assert isinstance(result, Decoded)
    assert [r.fields for r in result.readings] == [{"people": 1}, {"vehicles": 2}]
    assert [(r.reason, r.index) for r in result.rejections] == [("out_of_range", 1)]


def test_an_integer_beyond_64_bits_costs_only_its_own_reading() -> None:
    huge = 10**23  # JSON allows it; 64-bit parsers refuse the whole document
    payload = f'[{{"people": 1}}, {{"people": {huge}}}, {{"seq": {huge}, "people": 2}}]'
    result = decode("smartunit/v1/camera/cam-1/data", payload.encode())
    assert isinstance(result, Decoded)
    assert [r.fields for r in result.readings] == [{"people": 1}]
    assert [(r.reason, r.index) for r in result.rejections] == [
        ("wrong_type", 1),
        ("wrong_type", 2),
    ]


def test_rfc3339_and_epoch_seconds_agree() -> None:
    received = 1795377200000
    a = decode("smartunit/v1/camera/cam-1/data", {"people": 1, "ts": 1795377198.5}, received)
    b = decode(
        "smartunit/v1/camera/cam-1/data",
        {"people": 1, "ts": "2026-11-23T03:53:18.500+08:00"},
        received,
    )
    assert isinstance(a, Decoded) and isinstance(b, Decoded)
    assert not a.rejections and not b.rejections
    assert a.readings[0].ts_ms == b.readings[0].ts_ms == 1795377198500


def test_parking_capacity_comes_from_the_registry() -> None:
    result = decode("smartunit/v1/parking/park-1/data", {"occupied": 30, "seq": 4})
    assert isinstance(result, Decoded)
    line = reading_line(result.readings[0], REGISTRY)
    assert "capacity=100i" in line and "free=70i" in line and "seq=4i" in line
    assert line.startswith("parking,city=c,community=m,device=park-1,district=d,grid=g,")


def test_oversize_and_overlong_payloads_are_bounded() -> None:
    big = decode("smartunit/v1/camera/cam-1/data", b" " * 300_000)
    assert isinstance(big, Rejection) and big.reason == "payload_too_large"
    many = decode("smartunit/v1/camera/cam-1/data", [{"people": 1}] * 1001)
    assert isinstance(many, Rejection) and many.reason == "batch_too_large"


def test_json_schemas_are_up_to_date() -> None:
    for name, schema in schemas().items():
        stored = json.loads((SCHEMA_DIR / name).read_text())
        assert stored == schema, f"docs/schemas/{name} is stale: run scripts/gen_schemas.py"
