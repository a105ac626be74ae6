"""A device seen for the first time: its series are admitted, numbered, put in their
family's chain and given their rules in one step per reading or batch, and the outcome is
exactly that of taking them one by one."""

from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.admission import QuantityAdmission
from collector.detection import DetectionEngine
from collector.fastpath import FastDecoder
from collector.protocol import Decoder, Limits, Reading
from collector.registry import Registry
from collector.rules import RuleBook, RuleSpec
from detectors.chain import Chain, GroupedChains

REGISTRY = Registry.from_mapping(
    {
        "units": {
            "tank-farm": {
                "hierarchy": {"city": "c", "district": "d", "street": "s", "community": "k"}
                | {"grid": "G1"},
                "safe_capacity": 100,
            },
            "gate": {
                "hierarchy": {"city": "c", "district": "d", "street": "s", "community": "k"}
                | {"grid": "G2"},
                "safe_capacity": 1000,
            },
        },
        "devices": {
            "gas-1": {"unit": "tank-farm", "family": "chem", "quantities": ["a1", "a2"]},
            "gas-2": {"unit": "gate", "family": "chem"},
            "cam-1": {"unit": "tank-farm", "family": "camera"},
            "cam-2": {"unit": "gate", "family": "camera"},
        },
    }
)
NOW_MS = 1_700_000_000_000

NAMES = st.sampled_from(["lel_pct", "temp_c", "a1", "a2", "a3", "a4", "a5"])
CHEM = st.builds(
    lambda names: ("chem", {"ts": NOW_MS / 1000, "readings": names}),
    st.dictionaries(NAMES, st.floats(0, 10), min_size=1, max_size=5),
)
CAMERA = st.builds(
    lambda extra: ("camera", {"ts": NOW_MS / 1000, "people": 3, "vehicles": 1} | extra),
    st.sampled_from([{}, {"interval_s": 10}]),
)
MESSAGES = st.lists(
    st.tuples(st.sampled_from(["1", "2", "3"]), CHEM | CAMERA), min_size=1, max_size=15
)


def admission(max_per_device: int, max_series: int) -> QuantityAdmission:
    return QuantityAdmission(
        max_per_device=max_per_device, max_series=max_series, known=frozenset({"lel_pct"})
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=MESSAGES, max_per_device=st.integers(1, 4), max_series=st.integers(1, 12))
def test_a_first_reading_on_the_plain_path_is_admitted_as_decode_admits_it(
    messages, max_per_device: int, max_series: int
) -> None:
    """The collector's order: ``plain`` first (which admits a new device's quantities
    when no cap refuses one), ``decode`` for what it hands on."""
    spec = Decoder(Limits(), admission=admission(max_per_device, max_series))
    fast = FastDecoder(Decoder(Limits(), admission=admission(max_per_device, max_series)))
    for number, (family, body) in messages:
        device = f"{'gas' if family == 'chem' else 'cam'}-{number}"
        topic, payload = f"smartunit/v1/{family}/{device}/data", orjson.dumps(body)
        expected = spec.decode(topic, payload, NOW_MS, REGISTRY)
        route = fast.route(topic, REGISTRY)
        assert route is not None
        plain = fast.plain(route, payload, NOW_MS, REGISTRY)
        if plain is not None:
            assert ([plain[0]], []) == (expected.readings, expected.rejections)  # type: ignore[union-attr]
            continue
        got = fast.decode(topic, payload, NOW_MS, REGISTRY)
        assert got.readings == expected.readings  # type: ignore[union-attr]
        assert [(r.reason, r.detail) for r in got.rejections] == [  # type: ignore[union-attr]
            (r.reason, r.detail)
            for r in expected.rejections  # type: ignore[union-attr]
        ]
    ours, theirs = fast.decoder.admission, spec.admission
    assert ours is not None and theirs is not None
    assert ours.series == theirs.series
    assert ours.admitted_by_device == theirs.admitted_by_device
    assert ours._extra == theirs._extra
    assert ours.take_over_cap() == theirs.take_over_cap()


def test_a_device_first_reading_takes_the_fast_path_and_a_refused_one_the_slow() -> None:
    fast = FastDecoder(Decoder(Limits(), admission=admission(1, 100)))
    topic = "smartunit/v1/chem/gas-2/data"
    route = fast.route(topic, REGISTRY)
    assert route is not None
    body = {"ts": NOW_MS / 1000, "readings": {"lel_pct": 1.0, "b1": 2.0}}
    assert fast.plain(route, orjson.dumps(body), NOW_MS, REGISTRY) is not None
    over = {"ts": NOW_MS / 1000, "readings": {"lel_pct": 1.0, "b2": 2.0}}
    assert fast.plain(route, orjson.dumps(over), NOW_MS, REGISTRY) is None
    refused = fast.decode(topic, orjson.dumps(over), NOW_MS, REGISTRY)
    assert [r.reason for r in refused.rejections] == ["too_many_quantities"]  # type: ignore[union-attr]


@settings(max_examples=100, deadline=None)
@given(
    groups=st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=40),
    split=st.integers(0, 40),
    again=st.lists(st.integers(0, 45), max_size=5),
)
def test_series_assigned_together_are_numbered_as_one_by_one(groups, split, again) -> None:
    def chains() -> GroupedChains:
        return GroupedChains({g: Chain.from_config("robust_z") for g in "abc"})

    series = list(range(len(groups)))
    # a later call may name known series again (kept as they are) and repeat one
    repeated = [s for s in again if s < len(groups)]
    calls = [
        (series[:split], groups[:split]),
        (repeated + series[split:], [groups[s] for s in repeated] + groups[split:]),
    ]
    one_by_one, together = chains(), chains()
    for members, named in calls:
        for one, group in zip(members, named, strict=True):
            one_by_one.assign(one, group)
        together.assign_all(members, named)
    ids = series * 3
    t = [float(k // len(groups)) for k in range(len(ids))]
    x = [float(k % 7) for k in range(len(ids))]
    expected, got = one_by_one.process(ids, t, x), together.process(ids, t, x)
    assert expected.score.tolist() == got.score.tolist()
    want, have = one_by_one.state(), together.state()
    assert want.keys() == have.keys()
    assert all(want[k].tobytes() == have[k].tobytes() for k in want)


SITE_RULES = [
    {
        "name": "gas-site",
        "family": "chem",
        "quantity": "lel_pct",
        "detector": "threshold",
        "units": ["tank-farm"],
        "params": {"levels": {"yellow": 1.0}},
    },
    {
        "name": "gas-everywhere",
        "family": "chem",
        "quantity": "temp_c",
        "detector": "threshold",
        "params": {"levels": {"red": 50.0}},
    },
    {
        "name": "crowd",
        "family": "camera",
        "quantity": "people",
        "detector": "capacity",
        "capacity_from": "safe_capacity",
        "params": {"levels": {"orange": 0.5}},
    },
]


def test_new_series_seen_together_get_their_own_units_rules_and_capacities() -> None:
    """Rules naming units, rules for every series, and capacities per site, all for
    series first seen in one batch."""
    engine = DetectionEngine(
        RuleBook(tuple(RuleSpec.model_validate(rule) for rule in SITE_RULES)), statistical=None
    )
    ts = NOW_MS - 60_000
    readings = [
        Reading("chem", "gas-1", ts, {"lel_pct": 5.0, "temp_c": 60.0}, 1),
        Reading("chem", "gas-2", ts, {"lel_pct": 5.0, "temp_c": 60.0}, 1),
        Reading("camera", "cam-1", ts, {"people": 80, "vehicles": 0}, 1),
        Reading("camera", "cam-2", ts, {"people": 80, "vehicles": 0}, 1),
    ]
    events = engine.process(readings, REGISTRY, now_s=NOW_MS / 1000)
    raised = sorted((e.detector, e.device, e.quantity, e.colour) for e in events)
    assert raised == [
        ("crowd", "cam-1", "people", "orange"),  # 80 of 100; not 80 of 1000
        ("gas-everywhere", "gas-1", "temp_c", "red"),
        ("gas-everywhere", "gas-2", "temp_c", "red"),
        ("gas-site", "gas-1", "lel_pct", "yellow"),  # tank-farm only
    ]
