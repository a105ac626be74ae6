"""Hostile input, fuzzed: no exception escapes decoding, every valid reading comes out
exactly once, every invalid object is rejected with a known reason.

Decoding goes through ``FastDecoder``, the collector's entry point: its fast path for
well-formed readings and the pydantic path for everything else.

Hypothesis generates topics, raw bytes, arbitrary JSON and near-valid readings with one
thing wrong. The number of examples is bounded (``FUZZ_EXAMPLES``, 400 by default; CI
runs the default, ``make fuzz`` runs 20,000).
"""

from __future__ import annotations

import math
import os
import time

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.families import PLUGINS
from collector.fastpath import Encoded, FastDecoder
from collector.protocol import (
    FAMILIES,
    PAYLOAD_MODELS,
    REJECTION_REASONS,
    Decoder,
    Rejection,
    parse_topic,
    reading_line,
)
from collector.registry import Registry

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "400"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
DECODER = FastDecoder(Decoder())
REGISTRY = Registry.empty()

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=20,
)
device_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}", fullmatch=True)
segments = st.text(max_size=20) | st.sampled_from(["smartunit", "v1", *FAMILIES, "data", ""])
topics = st.lists(segments, min_size=0, max_size=7).map("/".join) | st.builds(
    lambda family, device, kind: f"smartunit/v1/{family}/{device}/{kind}",
    st.sampled_from([*FAMILIES, "Camera", "bus", ""]),
    device_ids | st.text(max_size=70),
    st.sampled_from(["data", "status", "Data", ""]),
)


def check(result: Encoded | Rejection, device: str | None = None) -> None:
    """Whatever came in, what comes out is well-formed and storable."""
    rejections = [result] if isinstance(result, Rejection) else result.rejections
    for rejection in rejections:
        assert rejection.reason in REJECTION_REASONS, rejection
        rejection.to_json("t", 0)  # quarantined messages are republished: must serialise
    if isinstance(result, Encoded):
        assert result.lines == [reading_line(r, REGISTRY) for r in result.readings]
        for reading in result.readings:
            assert device is None or reading.device == device  # the topic's id, never the payload's
            assert reading.fields
            for value in reading.fields.values():
                assert isinstance(value, int | float) and math.isfinite(value)
            reading_line(reading, REGISTRY)  # escapes everything; raises on what it cannot


@FUZZ
@given(topic=topics, payload=st.binary(max_size=300))
def test_raw_bytes_on_any_topic_never_crash(topic: str, payload: bytes) -> None:
    check(DECODER.decode(topic, payload, int(time.time() * 1000), REGISTRY))


@FUZZ
@given(topic=topics)
def test_topic_parsing_never_crashes(topic: str) -> None:
    parsed = parse_topic(topic)
    if not isinstance(parsed, Rejection):
        assert topic == f"smartunit/v1/{parsed.family}/{parsed.device}/{parsed.kind}"
        assert parsed.family in FAMILIES and parsed.kind in ("data", "status")


@FUZZ
@given(family=st.sampled_from(FAMILIES), device=device_ids, value=json_values)
def test_arbitrary_json_never_crashes(family: str, device: str, value: object) -> None:
    payload = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS) if _dumpable(value) else b"{"
    check(DECODER.decode(f"smartunit/v1/{family}/{device}/data", payload, _now(), REGISTRY), device)


def _dumpable(value: object) -> bool:
    try:
        orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):
        return False
    return True


def _now() -> int:
    return int(time.time() * 1000)


# -- near-valid readings: each valid one out exactly once, each broken one rejected --------

VALID = {
    family: {k: v for k, v in plugin.example.items() if k not in ("ts", "seq", "interval_s")}
    for family, plugin in PLUGINS.items()
}
BREAKAGES = [
    ("people", -1),
    ("people", 1.5),
    ("people", "12"),
    ("occupied", None),
    ("ts", "yesterday"),
    ("ts", 10**13),  # milliseconds where seconds belong
    ("ts", 1e308),  # finite seconds, infinite milliseconds
    ("readings", {"LEL": 1.0}),
    ("readings", {"lel_pct": "high"}),
    ("readings", {}),
    ("seq", -5),
    ("device", "somebody-else"),
    ("smoke", 2),
    ("smoke", True),
    ("temp_c", "hot"),
    ("pressure_kpa", [350]),
]


@st.composite
def batches(draw: st.DrawFn) -> tuple[str, str, list[dict], set[int]]:
    family = draw(st.sampled_from(FAMILIES))
    device = draw(device_ids)
    now = time.time()
    objects, valid_seqs = [], set()
    for seq in range(draw(st.integers(min_value=1, max_value=12))):
        obj = {**VALID[family], "seq": seq, "ts": now - draw(st.integers(0, 3600))}
        if draw(st.booleans()):
            key, value = draw(st.sampled_from(BREAKAGES))
            if family == "camera" and key == "occupied":
                key = "people"  # a camera without any count
                obj.pop("vehicles")
            obj[key] = value
            if value is None:
                obj.pop(key)
            broken = _breaks(family, key, value)
        else:
            broken = False
        if draw(st.booleans()):
            obj["firmware_extra"] = draw(st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8))
        objects.append(obj)
        if not broken:
            valid_seqs.add(seq)
    return family, device, objects, valid_seqs


def _breaks(family: str, key: str, value: object) -> bool:
    """Whether that change makes a reading of this family invalid."""
    relevant = {*VALID[family], "ts", "seq", "device"}
    if key == "people" and family == "camera" and value is None:
        return True
    return key in relevant


@FUZZ
@given(batch=batches())
def test_every_valid_reading_exactly_once_every_broken_one_rejected(batch) -> None:
    family, device, objects, valid_seqs = batch
    result = DECODER.decode(
        f"smartunit/v1/{family}/{device}/data", orjson.dumps(objects), _now(), REGISTRY
    )
    assert isinstance(result, Encoded), result
    check(result, device)
    assert sorted(r.seq for r in result.readings) == sorted(valid_seqs)
    assert len(result.readings) + len(result.rejections) == len(objects)
    assert {r.index for r in result.rejections} == set(range(len(objects))) - {
        i for i, o in enumerate(objects) if o["seq"] in valid_seqs
    }


@FUZZ
@given(
    family=st.sampled_from(FAMILIES),
    device=device_ids,
    key=st.sampled_from(sorted({k for m in PAYLOAD_MODELS.values() for k in m.model_fields})),
    value=json_values,
)
def test_any_value_in_any_field_never_crashes(
    family: str, device: str, key: str, value: object
) -> None:
    obj = {**VALID[family], "ts": time.time(), "seq": 1, key: value}
    payload = orjson.dumps(obj)
    check(DECODER.decode(f"smartunit/v1/{family}/{device}/data", payload, _now(), REGISTRY), device)
