"""One device, or many, cannot grow series without bound; the warm start reads history
within a budget."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.admission import QuantityAdmission
from collector.fastpath import FastDecoder
from collector.influx import InfluxClient, query_sync
from collector.protocol import Decoder, Limits
from collector.registry import Registry
from collector.warmstart import HistoryReader
from tests.conftest import influx_rows, poll
from tests.test_detection_e2e import PRESETS

REGISTRY = """
[units.xinghua]
kind = "chem_enterprise"
hierarchy = { city = "suzhou", district = "zjg", street = "park", community = "e", grid = "CP-01" }

[devices.gas-1]
unit = "xinghua"
family = "chem"
quantities = ["vessel_temp_c"]
"""


def field_keys(influx, family: str) -> set[str]:
    return {row["fieldKey"] for row in influx_rows(influx, f'SHOW FIELD KEYS FROM "{family}"')}


@pytest.mark.slow
def test_a_device_naming_quantities_without_end_is_capped(
    make_settings, run_collector, publisher, subscribe, tmp_path: Path
) -> None:
    registry = tmp_path / "registry.toml"
    registry.write_text(REGISTRY)
    settings = make_settings(
        registry, ingest={"max_quantities_per_device": 5}, detection={"rules": [PRESETS]}
    )
    collector = run_collector(settings)
    rejected = subscribe("smartunit/v1/_rejected/chem/gas-1")
    start = time.time() - 600
    backlog = [  # each reading names new quantities, and the known ones
        {
            "ts": start + k,
            "readings": {
                "lel_pct": 3.0,  # watched by the presets
                "vessel_temp_c": 40.0,  # listed in the registry
                **{f"made_up_{k}_{n}": 1.0 for n in range(4)},
            },
        }
        for k in range(50)
    ]
    publisher.publish("smartunit/v1/chem/gas-1/data", orjson.dumps(backlog))
    collector.wait_received(1)

    stats = collector.stats
    assert stats.rejections["too_many_quantities"] == 49  # every reading after the first 5 new
    keys = poll(lambda: field_keys(settings.influx, "chem"), lambda k: len(k) >= 8)
    made_up = {key for key in keys if key.startswith("made_up_")}
    assert len(made_up) == 5  # the cap: the first reading's 4, one of the second's
    assert {"lel_pct", "vessel_temp_c"} <= keys
    # the known quantities of every reading are stored all the same
    stored = poll(
        lambda: influx_rows(settings.influx, 'SELECT "lel_pct" FROM "chem"'),
        lambda rows: len(rows) == 50,
    )
    assert len(stored) == 50
    quarantined = rejected.wait_for(49)
    first = json.loads(quarantined[0].payload)
    assert first["reason"] == "too_many_quantities" and first["index"] == 1
    assert "made_up_1_" in first["detail"]
    engine = collector.collector.engine
    assert engine is not None and engine.series_count == 7
    # an operator alert names the device, once
    alerts = collector.collector.alerts
    assert alerts is not None
    found = [
        (a.fingerprint.device, a.fingerprint.detector)
        for a in alerts.find()
        if a.family == "system"
    ]
    assert found == [("gas-1", "quantity-cap")]
    collector.stop()


@pytest.mark.slow
def test_the_collector_holds_no_more_series_than_its_cap(
    make_settings, run_collector, publisher
) -> None:
    settings = make_settings(detection={"max_series": 10})
    collector = run_collector(settings)
    for d in range(15):  # a flood of made-up device ids, two series each
        publisher.publish(
            f"smartunit/v1/camera/cam-{d}/data", json.dumps({"people": d, "vehicles": 1})
        )
    collector.wait_received(15)
    assert collector.stats.rejections["too_many_series"] == 10
    assert collector.stats.readings_accepted == 5
    engine = collector.collector.engine
    assert engine is not None and engine.series_count == 10
    devices = poll(
        lambda: influx_rows(settings.influx, 'SHOW TAG VALUES FROM "camera" WITH KEY = "device"'),
        lambda rows: len(rows) >= 5,
    )
    assert len(devices) == 5
    alerts = collector.collector.alerts
    assert alerts is not None
    assert [(a.fingerprint.device, a.fingerprint.detector) for a in alerts.find()] == [
        (settings.mqtt.client_id, "series-cap")
    ]
    collector.stop()


def write_history(influx, lines: list[str]) -> None:
    query_sync(influx, f'CREATE DATABASE "{influx.database}"')
    for start in range(0, len(lines), 5000):
        response = httpx.post(
            f"{influx.url}/write",
            params={"db": influx.database, "precision": "ms"},
            content="\n".join(lines[start : start + 5000]),
        )
        assert response.status_code == 204


def read_all(influx, start_ms: int, end_ms: int, **limits) -> tuple[list, HistoryReader]:
    async def run() -> tuple[list, HistoryReader]:
        client = InfluxClient(influx)
        reader = HistoryReader(client, **limits)
        pages = [page async for page in reader.pages(start_ms, end_ms)]
        await client.aclose()
        return pages, reader

    return asyncio.run(run())


@pytest.mark.slow
def test_the_warm_start_never_asks_for_more_than_its_budget(make_settings) -> None:
    influx = make_settings().influx
    start_ms = round((time.time() - 7200) * 1000)
    lines = [  # 20 devices reporting at the same instants, 3 quantities; then a junk one
        f"chem,device=gas-{d} lel_pct={k % 7},temp_c=20.5,h2s_ppm=0.1 {start_ms + 1000 * k}"
        for k in range(300)
        for d in range(20)
    ] + [f"chem,device=junk junk_{n}=1 {start_ms + n}" for n in range(1500)]
    write_history(influx, lines)
    end_ms = start_ms + 3_600_000

    pages, reader = read_all(influx, start_ms, end_ms, max_points=5000, page_points=700)
    assert reader.spent <= 5000 and reader.exhausted
    assert 0 < reader.returned <= 5000
    assert max(sum(len(r.fields) for r in page) for page in pages) <= 700

    # with room for all of it: every reading once, each series in time order
    pages, reader = read_all(
        influx,
        start_ms,
        end_ms,
        max_points=10**7,
        page_points=1000,
        known=frozenset({"lel_pct", "temp_c"}),
    )
    readings = [r for page in pages for r in page if r.device != "junk"]
    seen = [(r.device, r.ts_ms, tuple(sorted(r.fields))) for r in readings]
    assert len(seen) == len(set(seen)) == 20 * 300
    assert {tuple(sorted(r.fields)) for r in readings} == {("h2s_ppm", "lel_pct", "temp_c")}
    for d in range(20):
        times = [r.ts_ms for r in readings if r.device == f"gas-{d}"]
        assert times == sorted(times)
    junk = {name for page in pages for r in page if r.device == "junk" for name in r.fields}
    assert len(junk) == 1000 - 3  # at most 1,000 field keys per family, known ones first


NAMES = st.sampled_from(["lel_pct", "temp_c", "a1", "a2", "a3", "a4", "a5", "a6", "seq_x"])
OBJECT = st.fixed_dictionaries(
    {"readings": st.dictionaries(NAMES, st.floats(0, 10) | st.just(True), min_size=1, max_size=4)}
)
MESSAGES = st.lists(
    st.tuples(
        st.sampled_from(["gas-1", "gas-2", "gas-3"]), st.lists(OBJECT, min_size=1, max_size=4)
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=MESSAGES, single=st.booleans())
def test_the_fast_path_admits_what_the_protocol_admits(messages, single: bool) -> None:
    registry = Registry.empty()

    def admission() -> QuantityAdmission:
        return QuantityAdmission(max_per_device=2, max_series=7, known=frozenset({"lel_pct"}))

    spec = Decoder(Limits(), admission=admission())
    fast = FastDecoder(Decoder(Limits(), admission=admission()))
    now_ms = 1_700_000_000_000
    for device, objects in messages:
        body = orjson.dumps(objects[0] if single else objects)
        topic = f"smartunit/v1/chem/{device}/data"
        expected = spec.decode(topic, body, now_ms, registry)
        got = fast.decode(topic, body, now_ms, registry)
        assert got.readings == expected.readings  # type: ignore[union-attr]
        assert [(r.reason, r.index, r.detail) for r in got.rejections] == [  # type: ignore[union-attr]
            (r.reason, r.index, r.detail)
            for r in expected.rejections  # type: ignore[union-attr]
        ]
    assert fast.decoder.admission.series == spec.admission.series  # type: ignore[union-attr]


@pytest.mark.slow
def test_a_collector_warm_starts_within_its_budget(make_settings, run_collector) -> None:
    settings = make_settings(
        detection={"warm_start_hours": 1.0, "warm_start_max_points": 5000, "statistical": None}
    )
    start_ms = round((time.time() - 1800) * 1000)
    write_history(
        settings.influx,
        [
            f"chem,device=gas-{d} lel_pct={k % 7},temp_c=20.5,h2s_ppm=0.1 {start_ms + 1000 * k}"
            for k in range(300)
            for d in range(20)
        ],  # 18,000 values
    )
    collector = run_collector(settings)
    engine = collector.collector.engine
    assert engine is not None
    assert 0 < engine.judged_readings + engine.late_readings <= 5000
    collector.stop()


def test_the_detectors_hold_no_more_series_than_their_cap_on_history_either() -> None:
    from collector.detection import DetectionEngine
    from collector.protocol import Reading
    from collector.rules import RuleBook

    engine = DetectionEngine(RuleBook(()), statistical="auto", max_series=3)
    now = time.time()
    history = [
        Reading("chem", "junk", round((now - 100 + k) * 1000), {f"q{k}_{n}": 1.0 for n in range(5)})
        for k in range(100)
    ]
    engine.process(history, Registry.empty())
    assert engine.series_count == 3
    assert engine.series_refused == 497
    assert len(engine.series.devices["junk"][1]) == 3  # refused names are not remembered

    # what the detectors know is admitted at start, and counts against the caps
    admission = QuantityAdmission(max_per_device=5, max_series=4)
    admission.seed(engine.series_names(), Registry.empty())
    assert admission.series == 3
    kept, refused = admission.admit(
        Reading("chem", "junk", 0, {"q0_0": 1.0, "new_1": 1.0, "new_2": 2.0}), Registry.empty()
    )
    assert kept is not None and set(kept.fields) == {"q0_0", "new_1"}
    assert refused is not None and refused.reason == "too_many_series"


@pytest.mark.slow
def test_of_more_history_than_the_budget_the_warm_start_reads_the_newest(make_settings) -> None:
    influx = make_settings().influx
    now_ms = round(time.time() * 1000)
    # Each block within one clock hour: the budget is spent by the hour, and a block
    # straddling two would let the newest part of the old one fit in.
    this_hour = now_ms - now_ms % 3_600_000
    old, recent = this_hour - 3 * 3_600_000 + 60_000, this_hour - 3_600_000 + 60_000
    write_history(
        influx,
        [
            f"chem,device=gas-{d} lel_pct=1,temp_c=2 {at + 1000 * k}"
            for at in (old, recent)
            for k in range(100)
            for d in range(10)
        ],  # 2,000 values an hour
    )
    pages, reader = read_all(influx, now_ms - 4 * 3_600_000, now_ms, max_points=3000)
    readings = [r for page in pages for r in page]
    assert {r.ts_ms >= recent for r in readings} == {True}
    assert len(readings) == 1000 and reader.returned == 2000
