"""The statistical chain per family: the simulator's normal devices stay quiet for days
with the shipped defaults, and their value anomalies are still caught."""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import pytest

from collector.admission import NOT_QUANTITIES
from collector.detection import DetectionEngine
from collector.protocol import Reading
from collector.registry import Registry
from collector.rules import RuleBook
from collector.statistical import chain_params
from detectors.chain import Chain, GroupedChains
from fieldtools.simulator import Anomaly, SimDevice, build_fleet
from tests.conftest import influx_rows, poll

DAY_S = 86_400.0
START = 1_793_548_800.0  # 2026-11-01 00:00 UTC
STATISTICAL = """SELECT * FROM "detections" WHERE "detector" = 'statistical' GROUP BY *"""


def fields_of(sample: dict[str, Any]) -> dict[str, int | float]:
    values = sample.get("readings", sample)
    return {k: v for k, v in values.items() if k not in NOT_QUANTITIES and k not in ("ts", "seq")}


def simulated_readings(fleet: list[SimDevice], start: float, days: float) -> list[Reading]:
    """Every device's readings over ``days`` from ``start``, in time order."""
    out = []
    for device in fleet:
        for t in start + np.arange(0.0, days * DAY_S, device.interval_s):
            sample = device.sample(float(t))
            if sample is not None:
                out.append(Reading(device.family, device.id, round(t * 1000), fields_of(sample)))
    out.sort(key=lambda r: r.ts_ms)
    return out


def statistical_events(engine: DetectionEngine, readings: list[Reading]) -> list[Any]:
    """The statistical chain's events, readings given to the engine an hour at a time."""
    registry = Registry.empty()
    events: list[Any] = []
    hour_ms = 3_600_000
    first = readings[0].ts_ms
    batch: list[Reading] = []
    for reading in readings:
        if batch and (reading.ts_ms - first) // hour_ms != (batch[0].ts_ms - first) // hour_ms:
            events += engine.process(batch, registry, now_s=batch[-1].ts_ms / 1000)
            batch = []
        batch.append(reading)
    events += engine.process(batch, registry, now_s=batch[-1].ts_ms / 1000)
    return [e for e in events if e.detector == "statistical"]


def test_the_normal_simulated_fleet_raises_no_statistical_alert_in_a_week() -> None:
    """Three devices of every family, a week of readings every minute or two: with the
    plain NAB defaults this fleet raises dozens of alerts (a chem temperature's first
    night, a tank level wandering to a new high, a crowd count's new daily peak)."""
    fleet = build_fleet(Registry.empty(), generated_per_family=3, interval_scale=12.0, seed=5)
    engine = DetectionEngine(RuleBook(()), statistical="auto")
    raised = statistical_events(engine, simulated_readings(fleet, START, 7.0))
    assert [(e.device, e.quantity, e.kind) for e in raised] == []


def test_a_camera_at_its_firmware_interval_stays_as_quiet_as_at_a_slower_one() -> None:
    """Read every 10 s, a camera's count breaks its range twelve times as often per day as
    read every 2 minutes, by the count of readings: rarity in device time keeps a vehicle
    count's ordinary new evening peak (this device's, on its fourth day) quiet."""
    camera = build_fleet(Registry.empty(), generated_per_family=10, interval_scale=1.0, seed=7)
    (device,) = [d for d in camera if d.id == "sim-cam-0007"]
    assert device.interval_s == 10.0  # the firmware's
    engine = DetectionEngine(RuleBook(()), statistical="auto")
    raised = statistical_events(engine, simulated_readings([device], START, 4.0))
    assert [(e.device, e.quantity, e.kind) for e in raised] == []


def test_value_anomalies_of_the_simulated_fleet_are_still_caught() -> None:
    fleet = [
        d
        for d in build_fleet(Registry.empty(), generated_per_family=3, interval_scale=12.0, seed=9)
        if d.family in ("camera", "chem", "fire")
    ]
    kinds = {"camera": "crowd_surge", "chem": "gas_leak", "fire": "pressure_drop"}
    for n, device in enumerate(fleet):  # after the day of warm-up, 20 minutes each
        start = START + 2 * DAY_S + 3600.0 * (5 * n + 1)
        device.anomaly = Anomaly(kinds[device.family], start, start + 1200)
    engine = DetectionEngine(RuleBook(()), statistical="auto")
    raised = statistical_events(engine, simulated_readings(fleet, START, 4.0))
    for device in fleet:
        anomaly = device.anomaly
        assert anomaly is not None
        mine = [e.ts_ms / 1000 for e in raised if e.device == device.id and e.kind == "raised"]
        assert any(anomaly.start <= t < anomaly.end for t in mine), (device.id, mine)
        assert all(t >= anomaly.start for t in mine), (device.id, mine)  # nothing before


def test_each_family_runs_its_own_defaults_under_the_sites_settings() -> None:
    assert chain_params("chem", "auto", {}, {})["alert_every_s"] == 730 * DAY_S
    site = {"p_alert": 1e-3, "sequence": {"likelihood": {"floor": 0.1}}}
    params = chain_params("chem", "auto", site, {"chem": {"sequence": {"bins": 12}}})
    assert params["p_alert"] == 1e-3  # the site's over the family's, in either unit
    assert "alert_every_s" not in params
    hourly = chain_params("chem", "auto", site, {"chem": {"alert_every_s": 3600.0}})
    assert hourly["alert_every_s"] == 3600.0 and "p_alert" not in hourly
    Chain.from_config(**hourly)  # one rarity: a valid chain
    assert params["sequence"] == {"likelihood": {"floor": 0.1}, "bins": 12}  # merged
    assert "warmup_enough_readings" in params  # the family's, kept
    assert chain_params("chem", "robust_z", {}, {}) == {}  # family defaults are auto's


def test_grouped_chains_give_each_group_what_its_own_chain_gives() -> None:
    rng = np.random.default_rng(3)
    n, count = 6, 900
    values = rng.normal(10, 1, (n, count))
    values[:, 700:] += 8  # a jump every series sees
    t = 1.7e9 + 600.0 * np.arange(count)
    groups = ["a", "b", "a", "b", "b", "a"]
    params: dict[str, dict[str, Any]] = {"a": {}, "b": {"p_alert": 1e-6}}

    def grouped() -> GroupedChains:
        chains = GroupedChains({g: Chain.from_config(**p) for g, p in params.items()})
        for series, group in enumerate(groups):
            chains.assign(series, group)
        return chains

    series = np.tile(np.arange(n), count)  # row by row across series
    times = np.repeat(t, n)
    flat = values.T.ravel()
    whole = grouped().process(series, times, flat)
    for group, p in params.items():
        members = [s for s, g in enumerate(groups) if g == group]
        alone = Chain.from_config(**p)
        local = {s: i for i, s in enumerate(members)}
        mask = np.isin(series, members)
        expected = alone.process([local[s] for s in series[mask]], times[mask], flat[mask])
        np.testing.assert_array_equal(whole.score[mask], expected.score)
        np.testing.assert_array_equal(whole.onset[mask], expected.onset)
    # saved half-way and restored into fresh chains, the rest comes out the same
    half = len(series) // 2
    first = grouped()
    first.process(series[:half], times[:half], flat[:half])
    second = grouped()
    second.restore(first.state())
    rest = second.process(series[half:], times[half:], flat[half:])
    np.testing.assert_array_equal(rest.score, whole.score[half:])
    with pytest.raises(KeyError):
        grouped().process([n], [t[0]], [1.0])  # never assigned


@pytest.mark.slow
def test_a_simulated_chem_device_stays_quiet_for_days_and_its_gas_leak_alerts(
    make_settings, run_collector, publisher
) -> None:
    """Through Mosquitto, the collector and InfluxDB: three days of a normal chem device
    sent as backlog arrays (a gateway after an outage), then a gas leak, live. Without
    rules: what the statistical chain raises on its own."""
    (device,) = [
        d
        for d in build_fleet(Registry.empty(), generated_per_family=1, interval_scale=12.0, seed=2)
        if d.family == "chem"
    ]
    now = time.time()
    leak_start = now - 1200.0
    start = leak_start - 3 * DAY_S
    history = [device.sample(float(t)) for t in np.arange(start, leak_start, device.interval_s)]
    device.anomaly = Anomaly("gas_leak", leak_start, now)
    leak = [device.sample(float(t)) for t in np.arange(leak_start, now - 60, device.interval_s)]
    settings = make_settings(detection={"rules": []})
    collector = run_collector(settings)
    topic = f"smartunit/v1/chem/{device.id}/data"
    for first in range(0, len(history), 1000):
        publisher.publish(topic, json.dumps(history[first : first + 1000]))
    stored = """SELECT count("level_pct") FROM "chem" """
    poll(
        lambda: influx_rows(settings.influx, stored),
        lambda rows: bool(rows) and rows[0]["count"] >= len(history),
        timeout_s=60,
    )
    assert influx_rows(settings.influx, STATISTICAL) == []  # three days, no false alert

    for sample in leak:
        publisher.publish(topic, json.dumps(sample))
    rows = poll(lambda: influx_rows(settings.influx, STATISTICAL), bool, timeout_s=30)
    assert {(r["device"], r["quantity"], r["kind"]) for r in rows} == {
        (device.id, "lel_pct", "raised")
    }
    collector.stop()
