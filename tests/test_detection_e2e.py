"""Detection inside the running collector, through real Mosquitto and InfluxDB."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from collector import service
from collector.config import SilenceSettings
from collector.detection import DetectionEngine
from collector.rules import RuleBook
from tests.conftest import influx_rows, poll

PRESETS = Path(__file__).resolve().parent.parent / "config" / "rules.presets.toml"
REGISTRY = """
[units.xinghua]
kind = "chem_enterprise"
hierarchy = { city = "suzhou", district = "zjg", street = "park", community = "e", grid = "CP-01" }

[devices.gas-1]
unit = "xinghua"
family = "chem"
gateway = "gw-1"

[devices.tank-1]
unit = "xinghua"
family = "chem"
gateway = "gw-1"
"""


@pytest.fixture
def chem_park(make_settings, tmp_path: Path):
    """Settings for the chemical-park registry above, with the shipped presets."""

    def build(**detection):
        registry = tmp_path / "registry.toml"
        registry.write_text(REGISTRY)
        return make_settings(registry, detection={"rules": [PRESETS], **detection})

    return build


def wait_rows(influx, query: str, count: int, timeout_s: float = 20.0) -> list[dict]:
    return poll(lambda: influx_rows(influx, query), lambda rows: len(rows) >= count, timeout_s)


@pytest.mark.slow
def test_gas_levels_and_a_silent_gateway_become_detections(
    chem_park, run_collector, publisher
) -> None:
    silence = SilenceSettings(check_interval_s=0.2, timeout_s=5.0, allowance_s=0.0)
    settings = chem_park(silence=silence)
    collector = run_collector(settings)

    lel = [3, 4, 26, 27, 28, 30, 55, 56, 57, 30, 10, 8]  # % LEL, one reading every 3 s
    start = time.time() - 3 * len(lel)  # recent: live data, not a backlog
    for i, value in enumerate(lel):
        publisher.publish(
            "smartunit/v1/chem/gas-1/data",
            json.dumps({"ts": start + 3 * i, "seq": i, "readings": {"lel_pct": value}}),
        )
        publisher.publish(
            "smartunit/v1/chem/tank-1/data",
            json.dumps({"ts": start + 3 * i, "seq": i, "readings": {"level_pct": 60 + i}}),
        )

    gas = wait_rows(
        settings.influx,
        """SELECT * FROM "detections" WHERE "detector" = 'combustible-gas' GROUP BY *""",
        4,
    )
    gas.sort(key=lambda r: r["time"])
    seen = [(r["kind"], r["colour"], r["previous_colour"], r["value"]) for r in gas]
    # orange only after 5 s at or above 25 % LEL (26 at t, 27 at t+3 s, 28 at t+6 s);
    # red at 50; back to orange below red's clear value 45; green below orange's 20.
    assert seen == [
        ("raised", "orange", "green", 28.0),
        ("changed", "red", "orange", 57.0),  # 55 .. 57: 6 s at or above 50
        ("changed", "orange", "red", 30.0),
        ("cleared", "green", "orange", 10.0),
    ]
    assert [r.get("threshold") for r in gas] == [25.0, 50.0, 25.0, None]
    assert {r["grid"] for r in gas} == {"CP-01"}
    # the fast climb from 4 to 26 % LEL was flagged before level 1 was even reached
    rising = influx_rows(
        settings.influx,
        """SELECT * FROM "detections" WHERE "detector" = 'combustible-gas-rising'""",
    )
    assert min(r["time"] for r in rising) < min(r["time"] for r in gas)
    assert {r["unit"] for r in gas} == {"xinghua"}

    # Both devices behind gw-1 go quiet (nothing newer than now, timeout 5 s): one gateway
    # alert, no device alerts.
    silent = wait_rows(
        settings.influx, """SELECT * FROM "detections" WHERE "detector" = 'silence' GROUP BY *""", 1
    )
    assert [(r["device"], r["family"], r["kind"], r["colour"]) for r in silent] == [
        ("gw-1", "gateway", "silent", "orange")
    ]
    assert collector.stats.detections["silent"] == 1
    collector.stop()


GAS_DETECTIONS = """SELECT * FROM "detections" WHERE "detector" = 'combustible-gas' GROUP BY *"""


def gas_every_3_s(publisher, *, start: float):
    """Publish gas-1's i-th reading, 3 s of device time after the one before."""

    def publish(i: int, value: float) -> None:
        publisher.publish(
            "smartunit/v1/chem/gas-1/data",
            json.dumps({"ts": start + 3 * i, "readings": {"lel_pct": value}}),
        )

    return publish


@pytest.mark.slow
def test_detectors_remember_across_a_restart(chem_park, run_collector, publisher) -> None:
    settings = chem_park()
    query = GAS_DETECTIONS
    publish = gas_every_3_s(publisher, start=time.time() - 300)

    first = run_collector(settings)
    for i, value in enumerate([3, 30, 30, 30, 30]):  # orange after 5 s
        publish(i, value)
    assert [r["kind"] for r in wait_rows(settings.influx, query, 1)] == ["raised"]
    first.stop()
    assert (settings.data_dir / "detector-state.npz").is_file()

    second = run_collector(settings)
    publish(5, 22)  # between orange's clear value (20) and its threshold (25): still orange
    publish(6, 10)  # below 20: the orange raised before the restart clears now
    rows = sorted(wait_rows(settings.influx, query, 2), key=lambda r: r["time"])
    assert [(r["kind"], r["value"]) for r in rows] == [("raised", 30.0), ("cleared", 10.0)]
    second.stop()


def _flip_a_byte(state: Path) -> None:
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the compressed arrays: their CRC no longer holds
    state.write_bytes(bytes(data))


def _state_of_another_shape(state: Path) -> None:
    import numpy as np

    # readable, of this format, but missing what a restore needs
    meta = {"format": DetectionEngine.STATE_FORMAT, "series": [["gas-1", "chem", "lel_pct"]]}
    with state.open("wb") as handle:
        np.savez_compressed(handle, meta=np.array(json.dumps(meta)))


@pytest.mark.slow
@pytest.mark.parametrize("damage", [_flip_a_byte, _state_of_another_shape])
def test_a_damaged_detector_state_is_set_aside_and_alarms_still_go_out(
    damage, chem_park, run_collector, publisher
) -> None:
    settings = chem_park()
    state = settings.data_dir / "detector-state.npz"
    query = GAS_DETECTIONS
    publish = gas_every_3_s(publisher, start=time.time() - 300)

    first = run_collector(settings)
    publish(0, 3)
    first.wait_received(1)
    first.stop()
    damage(state)

    second = run_collector(settings)  # starts: what was learnt is lost, not the alarms
    for i, value in enumerate([30, 30, 30, 30, 30], start=1):
        publish(i, value)
    assert [r["kind"] for r in wait_rows(settings.influx, query, 1)] == ["raised"]
    assert len(list(settings.data_dir.glob("detector-state.npz.damaged-*"))) == 1
    second.stop()
    assert DetectionEngine(RuleBook.load([PRESETS])).load(state)  # a good one in its place


def test_the_detector_state_is_also_saved_while_running(
    chem_park, run_collector, publisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "DETECTOR_STATE_SAVE_S", 0.5)  # every stats interval (1 s)
    settings = chem_park()
    state = settings.data_dir / "detector-state.npz"
    collector = run_collector(settings)
    publisher.publish(
        "smartunit/v1/chem/gas-1/data", json.dumps({"ts": time.time(), "readings": {"lel_pct": 3}})
    )
    collector.wait_received(1)
    assert poll(state.is_file, bool, 10)  # a crash now would not lose what was learnt
    reloaded = DetectionEngine(RuleBook.load([PRESETS]))
    assert reloaded.load(state) and reloaded.series_count >= 1
    collector.stop()


@pytest.mark.slow
def test_without_saved_state_detectors_warm_up_from_history(
    chem_park, run_collector, publisher
) -> None:
    import httpx

    from collector.influx import query_sync

    settings = chem_park(warm_start_hours=1.0)
    assert not (settings.data_dir / "detector-state.npz").exists()
    query_sync(settings.influx, f'CREATE DATABASE "{settings.influx.database}"')
    start_ms = round((time.time() - 600) * 1000)
    history = "\n".join(
        f"chem,device=gas-1,unit=xinghua lel_pct={v} {start_ms + 3000 * i}"
        for i, v in enumerate([3.0, 30.0, 30.0, 30.0, 30.0])  # an orange episode, still open
    )
    written = httpx.post(
        f"{settings.influx.url}/write",
        params={"db": settings.influx.database, "precision": "ms"},
        content=history,
    )
    assert written.status_code == 204

    collector = run_collector(settings)
    for i, value in enumerate([22.0, 10.0]):
        publisher.publish(
            "smartunit/v1/chem/gas-1/data",
            json.dumps({"ts": start_ms / 1000 + 15 + 3 * i, "readings": {"lel_pct": value}}),
        )
    query = """SELECT * FROM "detections" WHERE "detector" = 'combustible-gas' GROUP BY *"""
    rows = wait_rows(settings.influx, query, 1)
    # the history raised orange inside the detectors, but raised nothing new; the live
    # readings clear it
    assert [(r["kind"], r["value"]) for r in rows] == [("cleared", 10.0)]
    collector.stop()


def test_catching_up_a_backlog_does_not_make_every_device_silent() -> None:
    from collector.detection import DetectionEngine
    from collector.protocol import Reading
    from collector.registry import Registry
    from collector.rules import RuleBook
    from detectors.rules.silence import SilenceWatch

    engine = DetectionEngine(
        RuleBook(()), statistical=None, silence=SilenceWatch(timeout_s=60, allowance_s=30)
    )
    registry = Registry.empty()
    hour_ago = time.time() - 3600
    backlog = [
        Reading("camera", f"cam-{d}", round((hour_ago + k) * 1000), {"people": 1})
        for k in range(30)
        for d in range(50)
    ]  # what the broker kept for us
    engine.process(backlog, registry)
    assert engine.check_silence(time.time(), registry) == []
    assert engine.catching_up

    # caught up: live data again, and one device that really stopped is found
    now = time.time()
    live = [Reading("camera", f"cam-{d}", round(now * 1000), {"people": 1}) for d in range(1, 50)]
    engine.process(live, registry)
    silent = engine.check_silence(now + 1, registry)
    assert [(e.device, e.kind) for e in silent] == [("cam-0", "silent")]
    assert not engine.catching_up


def test_a_network_cut_is_one_fleet_alert_not_one_per_device() -> None:
    from collector.detection import FLEET, DetectionEngine
    from collector.protocol import Reading
    from collector.registry import Registry
    from collector.rules import RuleBook
    from detectors.rules.silence import SilenceWatch

    engine = DetectionEngine(
        RuleBook(()), statistical=None, silence=SilenceWatch(timeout_s=60, allowance_s=30)
    )
    registry = Registry.empty()
    now = time.time()
    fleet = [Reading("camera", f"cam-{d}", round(now * 1000), {"people": 1}) for d in range(50)]
    engine.process(fleet, registry)
    assert engine.check_silence(now + 1, registry) == []
    silent = engine.check_silence(now + 120, registry)  # nothing arrived since
    assert [(e.device, e.family, e.kind, e.colour, e.value) for e in silent] == [
        (FLEET, "system", "silent", "red", 50.0)
    ]
    assert not engine.device_alive(FLEET, now + 120)  # its alert cannot be verified closed
    back = [
        Reading("camera", f"cam-{d}", round((now + 125) * 1000), {"people": 1})
        for d in range(1, 50)
    ]
    engine.process(back, registry)
    resumed = engine.check_silence(now + 126, registry)
    assert sorted((e.device, e.kind) for e in resumed) == [
        ("_fleet", "resumed"),
        ("cam-0", "silent"),
    ]
    assert engine.device_alive(FLEET, now + 126)


def test_a_gateway_is_alive_while_any_of_its_devices_reports() -> None:
    from collector.detection import DetectionEngine
    from collector.protocol import Reading
    from collector.registry import Registry
    from collector.rules import RuleBook
    from detectors.rules.silence import SilenceWatch

    engine = DetectionEngine(
        RuleBook(()), statistical=None, silence=SilenceWatch(timeout_s=60, allowance_s=30)
    )
    registry = Registry.load(Path(__file__).parent.parent / "config" / "registry.example.toml")
    behind = ("chem-xh-gas-01", "chem-xh-tank-01")  # both report through gw-xh-01
    now = time.time()
    engine.process(
        [Reading("chem", d, round(now * 1000), {"lel_pct": 1.0}) for d in behind], registry
    )
    assert engine.check_silence(now + 1, registry) == []
    assert engine.device_alive("gw-xh-01", now + 1)
    silent = engine.check_silence(now + 120, registry)
    assert [(e.device, e.kind) for e in silent] == [("gw-xh-01", "silent")]
    assert not engine.device_alive("gw-xh-01", now + 120)  # not verified closed meanwhile
    late = Reading("chem", behind[1], round((now + 125) * 1000), {"lel_pct": 1.0})
    engine.process([late], registry)
    assert engine.device_alive("gw-xh-01", now + 126)
    assert not engine.device_alive("gw-nowhere", now + 126)


def test_detections_carry_the_threshold_in_the_quantitys_unit(tmp_path: Path) -> None:
    from collector.detection import DetectionEngine
    from collector.protocol import Reading
    from collector.registry import Registry
    from collector.rules import RuleBook

    registry_file = tmp_path / "registry.toml"
    registry_file.write_text(
        REGISTRY
        + """
[units.square]
kind = "square"
safe_capacity = 2000
hierarchy = { city = "suzhou", district = "zjg", street = "old", community = "w", grid = "OT-3" }

[devices.cam-9]
unit = "square"
family = "camera"
"""
    )
    registry = Registry.load(registry_file)
    engine = DetectionEngine(RuleBook.load([PRESETS]), statistical=None)
    start = time.time() - 600
    crowd = [
        Reading("camera", "cam-9", round((start + 10 * k) * 1000), {"people": 1500.0})
        for k in range(10)  # 75 % of the safe capacity for 90 s: yellow after 60 s
    ]
    gas = [Reading("chem", "gas-1", round((start + k) * 1000), {"lel_pct": 30.0}) for k in range(8)]
    events = engine.process(crowd + gas, registry)
    found = {(e.detector, e.colour): e.threshold for e in events if e.kind == "raised"}
    assert found[("crowd-capacity", "yellow")] == 0.7 * 2000  # people, not a fraction
    assert found[("combustible-gas", "orange")] == 25.0  # % LEL


def test_state_saved_by_other_detectors_starts_them_afresh_instead_of_stopping(
    chem_park, run_collector, publisher
) -> None:
    """An upgrade that adds detector parts, or changed statistical_params, meets a state
    file laid out for the old ones: the chain starts afresh and the collector runs."""
    query = """SELECT * FROM "detections" WHERE "detector" = 'combustible-gas' GROUP BY *"""
    start = time.time() - 300

    def publish(i: int, value: float) -> None:
        publisher.publish(
            "smartunit/v1/chem/gas-1/data",
            json.dumps({"ts": start + 3 * i, "readings": {"lel_pct": value}}),
        )

    older = chem_park(statistical_params={"parts": ["raw", "smooth", "shift"]})
    first = run_collector(older)
    publish(0, 3)
    first.wait_received(1)
    first.stop()
    assert (older.data_dir / "detector-state.npz").is_file()

    second = run_collector(chem_park())  # the default chain: more parts, more state
    for i, value in enumerate([3, 30, 30, 30, 30], start=1):
        publish(i, value)
    assert [r["kind"] for r in wait_rows(second.settings.influx, query, 1)] == ["raised"]
    second.stop()
