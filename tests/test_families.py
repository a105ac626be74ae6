"""The family plug-ins' contract: every family is complete, and its parts agree."""

from __future__ import annotations

import dataclasses

import pytest

from collector.families import FAMILIES, PLUGINS, known_family
from collector.families.base import Family
from collector.fastpath import FAST_ENCODERS, route_for
from collector.protocol import (
    PAYLOAD_MODELS,
    Decoder,
    Reading,
    Topic,
    parse_topic,
    reading_line,
)
from collector.registry import Registry
from fieldtools.shipped import SHIPPED_ACL, read_shipped

NOW_MS = 1_700_000_000_000
REGISTRY = Registry.from_mapping(
    {
        "units": {
            "site": {
                "kind": "other",
                "hierarchy": {
                    "city": "c",
                    "district": "d",
                    "street": "s",
                    "community": "m",
                    "grid": "g",
                },
                "capacity": 50,
            }
        },
        "devices": {f"{family}-1": {"unit": "site", "family": family} for family in PLUGINS},
    }
)


def test_every_list_of_families_is_the_registry() -> None:
    assert tuple(PLUGINS) == FAMILIES
    assert set(PAYLOAD_MODELS) == set(FAST_ENCODERS) == set(FAMILIES)
    for family in FAMILIES:
        assert isinstance(parse_topic(f"smartunit/v1/{family}/d-1/data"), Topic)
        assert known_family(family) == family
    with pytest.raises(ValueError, match="unknown family"):
        known_family("bus")


def test_a_family_cannot_be_declared_without_its_parts() -> None:
    required = {f.name for f in dataclasses.fields(Family)}
    assert {"payload", "encode", "derived", "example", "simulation"} <= required
    assert all(
        f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        for f in dataclasses.fields(Family)
    )
    camera = PLUGINS["camera"]
    with pytest.raises(TypeError):
        Family(  # type: ignore[call-arg]  # no encoder
            name="bus",
            summary="",
            payload=camera.payload,
            derived=camera.derived,
            count_field="seq",
            example={},
            simulation=camera.simulation,
        )


@pytest.mark.parametrize("family", FAMILIES)
def test_each_example_decodes_the_same_on_both_paths(family: str) -> None:
    plugin = PLUGINS[family]
    device = f"{family}-1"
    example = {**plugin.example, "ts": NOW_MS / 1000}
    slow = Decoder().reading(plugin.payload, example, family, device, NOW_MS)
    assert isinstance(slow, Reading), slow
    assert plugin.count_field in {*slow.fields, "seq"}
    route = route_for(f"smartunit/v1/{family}/{device}/data", REGISTRY)
    assert route is not None
    fast = plugin.encode(example, route, NOW_MS, NOW_MS - 1000, NOW_MS + 1000)
    assert fast is not None and fast[0] == slow
    assert fast[1] == reading_line(slow, REGISTRY)
    assert fast[1].startswith(f"{family},")


def test_derived_fields_are_stored_on_both_paths() -> None:
    route = route_for("smartunit/v1/parking/parking-1/data", REGISTRY)
    assert route is not None
    fast = PLUGINS["parking"].encode({"occupied": 60}, route, NOW_MS, 0, NOW_MS)
    assert fast is not None
    assert "capacity=50i,free=0i" in fast[1]
    assert fast[1] == reading_line(fast[0], REGISTRY)


def test_fire_readings_need_a_measurement_and_a_binary_smoke() -> None:
    decoder, fire = Decoder(), PLUGINS["fire"]
    for bad, reason in (
        ({"seq": 1}, "missing_field"),
        ({"smoke": 2}, "out_of_range"),
        ({"smoke": True}, "wrong_type"),
        ({"pressure_kpa": "low"}, "wrong_type"),
    ):
        judged = decoder.reading(fire.payload, bad, "fire", "fire-1", NOW_MS)
        assert not isinstance(judged, Reading) and judged.reason == reason, (bad, judged)
    good = decoder.reading(fire.payload, {"pressure_kpa": 95}, "fire", "fire-1", NOW_MS)
    assert isinstance(good, Reading) and good.fields == {"pressure_kpa": 95.0}


def test_the_shipped_broker_acl_lets_every_family_publish() -> None:
    acl = read_shipped(SHIPPED_ACL).splitlines()
    for family in FAMILIES:
        for kind in ("data", "status"):
            assert f"pattern write smartunit/v1/{family}/%u/{kind}" in acl  # the devices
            assert f"topic write smartunit/v1/{family}/+/{kind}" in acl  # the simulator
