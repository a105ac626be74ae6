"""The fast path decides nothing of its own: what it accepts, the protocol's pydantic
definition accepts with the same reading and the same line; everything else it hands on."""

from __future__ import annotations

import time

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.families import PLUGINS
from collector.fastpath import FAST_ENCODERS, Encoded, FastDecoder, route_for
from collector.protocol import PAYLOAD_MODELS, Decoder, Limits, Reading, reading_line
from collector.registry import Registry

REGISTRY = Registry.from_mapping(
    {
        "units": {
            "plaza": {
                "kind": "square",
                "hierarchy": {
                    "city": "suzhou",
                    "district": "gusu",
                    "street": "pingjiang",
                    "community": "dudu",
                    "grid": "G1",
                },
                "capacity": 300,
                "safe_capacity": 800,
            }
        },
        "devices": {
            "cam-1": {"unit": "plaza", "family": "camera"},
            "lot-1": {"unit": "plaza", "family": "parking"},
            "lot-2": {"unit": "plaza", "family": "parking", "capacity": 40},
            "gas-1": {"unit": "plaza", "family": "chem"},
        },
    }
)
REGISTERED = {
    "camera": ["cam-1"],
    "parking": ["lot-1", "lot-2"],
    "chem": ["gas-1"],
}
# Every family of the plug-in registry, with an unregistered device besides the above.
DEVICES = {family: [*REGISTERED.get(family, []), f"{family}-new"] for family in PLUGINS}
LIMITS = Limits(max_future_ms=300_000, max_age_ms=86_400_000)
DECODER = Decoder(LIMITS)
NOW_MS = 1_700_000_000_000

EDGE_VALUES = st.sampled_from(
    [
        None, True, False, 0, 1, 2, -1, 12, 2**31 - 1, 2**31, 2**63 - 1, -(2**63),
        0.0, -0.0, 0.5, 1.5, 86_400, 86_400.0, 86_400.5, 1e308, -1e308, 5e-324,
        NOW_MS / 1000, NOW_MS, "12",
        "2023-11-14T22:13:20Z", "", "cam-1", "lot-1", "gas-1", [], [1], {}, {"a": 1},
    ]
)  # fmt: skip
QUANTITY_NAMES = st.sampled_from(
    ["lel_pct", "temp_c", "a", "a" * 64, "a" * 65, "Temp", "1x", "x-y", "seq", "ts", "é", ""]
)
TIMES = st.sampled_from(
    [NOW_MS + 300_000, NOW_MS + 300_001, NOW_MS - 86_400_000, NOW_MS - 86_400_001]
).map(lambda ms: ms / 1000) | st.integers(NOW_MS // 1000 - 90_000, NOW_MS // 1000 + 400)
READINGS = st.dictionaries(QUANTITY_NAMES, EDGE_VALUES | st.floats(), max_size=4)
KEYS = sorted({key for model in PAYLOAD_MODELS.values() for key in model.model_fields})
BASE = {
    family: {k: v for k, v in plugin.example.items() if k not in ("ts", "seq")}
    for family, plugin in PLUGINS.items()
}


@st.composite
def near_valid(draw: st.DrawFn) -> tuple[str, str, dict[str, object]]:
    family = draw(st.sampled_from(list(BASE)))
    obj: dict[str, object] = {**BASE[family], "ts": NOW_MS / 1000 - 5, "seq": 7}
    # Mostly the family's own keys (its edges), sometimes another family's (ignored).
    keys = st.sampled_from(sorted(PAYLOAD_MODELS[family].model_fields)) | st.sampled_from(KEYS)
    for key in draw(st.lists(keys, max_size=3)):
        special = {"readings": READINGS, "ts": TIMES | EDGE_VALUES}
        obj[key] = draw(special.get(key, EDGE_VALUES))
    for key in draw(st.lists(st.sampled_from(KEYS), max_size=2)):
        obj.pop(key, None)
    return family, draw(st.sampled_from(DEVICES[family])), obj


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=near_valid())
def test_what_the_fast_path_accepts_the_protocol_accepts_identically(case) -> None:
    family, device, obj = case
    route = route_for(f"smartunit/v1/{family}/{device}/data", REGISTRY)
    assert route is not None
    oldest, newest = NOW_MS - LIMITS.max_age_ms, NOW_MS + LIMITS.max_future_ms
    fast = FAST_ENCODERS[family](obj, route, NOW_MS, oldest, newest)
    if fast is None:
        return  # handed on: whatever the slow path says is the answer
    slow = DECODER.reading(PAYLOAD_MODELS[family], obj, family, device, NOW_MS)
    assert isinstance(slow, Reading), (obj, slow)
    assert fast[0] == slow
    assert [type(v) for v in fast[0].fields.values()] == [type(v) for v in slow.fields.values()]
    assert fast[1] == reading_line(slow, REGISTRY)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=near_valid())
def test_a_message_the_plain_path_takes_decodes_to_the_same_reading_and_line(case) -> None:
    family, device, obj = case
    decoder = FastDecoder(DECODER)
    topic = f"smartunit/v1/{family}/{device}/data"
    route = decoder.route(topic, REGISTRY)
    assert route is not None
    payload = orjson.dumps(obj)
    plain = decoder.plain(route, payload, NOW_MS, REGISTRY)
    if plain is None:
        return  # handed on to decode, the answer
    whole = decoder.decode(topic, payload, NOW_MS, REGISTRY)
    assert isinstance(whole, Encoded)
    assert (whole.readings, whole.lines, whole.rejections) == ([plain[0]], [plain[1]], [])


def test_well_formed_messages_take_the_fast_path_and_the_rest_the_slow_one() -> None:
    decoder = FastDecoder(DECODER)
    now_s = time.time()
    good = [
        ("camera/cam-1", {"ts": now_s, "seq": 1, "people": 5, "vehicles": 0, "interval_s": 10}),
        ("parking/lot-2", {"ts": now_s, "seq": 2, "occupied": 41}),
        ("parking/lot-new", {"occupied": 3, "capacity": 10}),
        ("chem/gas-1", [{"ts": now_s - k, "readings": {"lel_pct": k}} for k in range(20)]),
    ]
    lines = []
    for where, body in good:
        result = decoder.decode(
            f"smartunit/v1/{where}/data", orjson.dumps(body), int(now_s * 1000), REGISTRY
        )
        assert not isinstance(result, type(None))
        lines += result.lines  # type: ignore[union-attr]
    assert (decoder.fast, decoder.slow) == (23, 0)
    # the registry's safe capacity is the unit's (unit_status), not repeated on every point
    assert lines[0].split(" ")[1] == "people=5i,vehicles=0i,interval_s=10.0,seq=1i"
    assert lines[1].startswith("parking,city=suzhou,community=dudu,device=lot-2,")
    assert "capacity=40i,free=0i,seq=2i" in lines[1]  # over-full: free space never negative
    assert "capacity=10i,free=7i" in lines[2]
    assert lines[3].split(" ")[1] == "lel_pct=0.0"

    slow_ones = [
        ("camera/cam-1", {"ts": "2023-11-14T22:13:20Z", "people": 5}),  # RFC 3339: slow path
        ("camera/cam-1", {"people": True}),
        ("parking/lot-1", [{"occupied": 1}, "junk", {"occupied": -1}]),
        ("camera/lot-1", {"people": 5}),  # the registry says parking
    ]
    for where, body in slow_ones:
        decoder.decode(
            f"smartunit/v1/{where}/data", orjson.dumps(body), int(now_s * 1000), REGISTRY
        )
    assert decoder.fast == 24  # the array's good element
    assert decoder.slow == 5


@pytest.mark.parametrize("registry", [REGISTRY, Registry.empty()])
def test_routes_follow_the_registry_in_force(registry: Registry) -> None:
    decoder = FastDecoder(DECODER)
    payload = orjson.dumps({"people": 5})
    first = decoder.decode("smartunit/v1/camera/cam-1/data", payload, NOW_MS, REGISTRY)
    second = decoder.decode("smartunit/v1/camera/cam-1/data", payload, NOW_MS, registry)
    assert "unit=plaza" in first.lines[0]  # type: ignore[union-attr]
    expected = "unit=plaza" if registry is REGISTRY else "unit=_unregistered"
    assert expected in second.lines[0]  # type: ignore[union-attr]
