"""A reading from the future, or a device clock set back, must not stop the judging of
the present; small reorderings stay late, as before."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from collector.detection import DetectionEngine
from collector.protocol import Reading
from collector.registry import Registry
from collector.rules import RuleBook
from tests.conftest import influx_rows, poll
from tests.test_detection_e2e import GAS_DETECTIONS, PRESETS, REGISTRY

FOR_S = 5.0  # the combustible-gas preset's duration


def gas(ts_s: float, lel: float, **more: float) -> Reading:
    return Reading("chem", "gas-1", round(ts_s * 1000), {"lel_pct": lel, **more})


@pytest.mark.slow
def test_one_reading_from_the_future_does_not_blind_a_gas_detector(
    make_settings, run_collector, publisher, tmp_path: Path
) -> None:
    registry = tmp_path / "registry.toml"
    registry.write_text(REGISTRY)
    settings = make_settings(registry, detection={"rules": [PRESETS]})
    collector = run_collector(settings)
    topic = "smartunit/v1/chem/gas-1/data"
    publisher.publish(topic, json.dumps({"ts": time.time() + 290, "readings": {"lel_pct": 2}}))
    collector.wait_received(1)  # judged on its own: the series' clock is now 290 s ahead

    start = time.time() - 14
    for i in range(15):  # 80 % LEL, one reading a second, at real time
        publisher.publish(topic, json.dumps({"ts": start + i, "readings": {"lel_pct": 80}}))
    found = poll(lambda: influx_rows(settings.influx, GAS_DETECTIONS), lambda rows: len(rows) >= 1)
    assert [(r["kind"], r["colour"]) for r in found] == [("raised", "red")]
    # raised once the level held for the rule's duration, counted from the first reading
    assert found[0]["time"] <= round((start + FOR_S + 1) * 1000)
    assert collector.collector is not None
    engine = collector.collector.engine
    assert engine is not None
    assert engine.clock_steps_back["gas-1"] == 1
    assert engine.late_readings == 0
    assert collector.collector.metrics()["clock_steps_back_total"] == 1
    alerts = collector.collector.alerts
    assert alerts is not None
    assert [(a.fingerprint.device, a.colour) for a in alerts.find()] == [("gas-1", "red")]
    collector.stop()


def test_a_device_clock_set_back_by_ntp_is_judged_again_at_once() -> None:
    engine = DetectionEngine(RuleBook.load([PRESETS]), statistical="auto")
    registry = Registry.empty()
    now = time.time()
    ahead = [gas(now - 60 + 290 + 3 * k, 3.0, temp_c=20.0) for k in range(20)]  # 290 s fast
    assert engine.process(ahead, registry, now_s=now) == []
    # NTP sets the clock right; the gas climbs from the first reading after the step
    stepped = [gas(now + 1 + k, 80.0) for k in range(8)]
    events = engine.process(stepped, registry, now_s=now + 10)
    raised = [e for e in events if e.detector == "combustible-gas"]
    assert [(e.kind, e.colour) for e in raised] == [("raised", "red")]
    assert raised[0].ts_ms == round((now + 1 + FOR_S) * 1000)  # durations restart there
    assert engine.clock_steps_back == {"gas-1": 1}
    assert engine.late_readings == 0
    # the device's other series stepped back with it: its next reading is judged too
    judged = engine.judged_readings
    engine.process([gas(now + 9.5, 80.0, temp_c=20.0)], registry, now_s=now + 11)
    assert engine.judged_readings == judged + 2
    assert engine.clock_steps_back == {"gas-1": 1}


def test_a_clock_step_back_in_pieces_is_one_step_per_arrival() -> None:
    engine = DetectionEngine(RuleBook.load([PRESETS]), statistical=None)
    registry = Registry.empty()
    now = time.time()
    engine.process([gas(now + 290, 3.0)], registry, now_s=now)
    engine.process([gas(now + 1, 3.0), gas(now + 2, 3.0)], registry, now_s=now + 2)
    engine.process([gas(now + 3, 3.0)], registry, now_s=now + 3)  # in order again
    assert engine.clock_steps_back == {"gas-1": 1}
    assert engine.judged_readings == 4 and engine.late_readings == 0


def test_late_and_reordered_readings_at_real_time_stay_late() -> None:
    engine = DetectionEngine(RuleBook.load([PRESETS]), statistical=None)
    registry = Registry.empty()
    now = time.time()
    engine.process([gas(now, 3.0)], registry, now_s=now)
    engine.process([gas(now - 2, 3.0)], registry, now_s=now)  # reordered in transit
    engine.process([gas(now - 3600, 3.0)], registry, now_s=now)  # a gateway's buffer
    engine.process([gas(now, 3.0)], registry, now_s=now)  # a duplicate
    # a clock a little ahead (within the tolerance) with a small reordering: late
    engine.process([gas(now + 8, 3.0)], registry, now_s=now)
    engine.process([gas(now + 2, 3.0)], registry, now_s=now)
    assert engine.late_readings == 4
    assert engine.clock_steps_back == {}
    # catching up a backlog: old readings in order are judged, none is a step
    backlog = DetectionEngine(RuleBook.load([PRESETS]), statistical=None)
    for k in range(10):
        backlog.process([gas(now - 3600 + k, 3.0)], registry, now_s=now)
    assert backlog.judged_readings == 10 and backlog.clock_steps_back == {}


def test_a_silent_device_is_not_kept_alive_by_a_reading_from_the_future() -> None:
    from detectors.rules.silence import SilenceWatch

    engine = DetectionEngine(
        RuleBook(()), statistical=None, silence=SilenceWatch(timeout_s=60, allowance_s=0)
    )
    registry = Registry.empty()
    now = time.time()
    engine.process([gas(now + 290, 3.0)], registry, now_s=now)
    engine.process([gas(now + 1, 3.0)], registry, now_s=now + 1)  # the step back
    assert engine.device_alive("gas-1", now + 2)
    assert not engine.device_alive("gas-1", now + 120)  # stopped after the step
