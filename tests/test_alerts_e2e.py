"""Alerts in the running collector: detections open them, verification closes them."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from collector.alerts.model import State
from collector.config import ReceiverSettings, SilenceSettings
from tests.test_detection_e2e import PRESETS, REGISTRY, wait_rows
from tests.test_webhooks import SECRET, Receiver, receiver_url  # noqa: F401 - fixture


def wait_for(predicate, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)
    return predicate()


@pytest.mark.slow
def test_a_gas_alarm_runs_the_loop_to_a_verified_close(
    make_settings,
    run_collector,
    publisher,
    tmp_path: Path,
    receiver_url: str,  # noqa: F811
) -> None:
    registry = tmp_path / "registry.toml"
    registry.write_text(REGISTRY)
    # only the GB/T level rule: this test is about the loop, not about every preset
    presets = PRESETS.read_text()
    gas_rule = presets[presets.index("[[rules]]") : presets.index("# A combustible gas reading")]
    rules = tmp_path / "rules.toml"
    rules.write_text(gas_rule)
    settings = make_settings(
        registry,
        detection={
            "rules": [rules],
            "silence": SilenceSettings(timeout_s=60.0, check_interval_s=0.5),
        },
        alerts={
            "verify_window_s": 1.0,
            "verify_interval_s": 0.2,
            "receivers": [
                ReceiverSettings(
                    name="work-orders", url=receiver_url, secret=SECRET, min_colour="orange"
                )
            ],
        },
    )
    collector = run_collector(settings)
    book = collector.collector.alerts

    def publish(value: float) -> None:
        publisher.publish(
            "smartunit/v1/chem/gas-1/data",
            json.dumps({"ts": time.time(), "readings": {"lel_pct": value}}),
        )

    def red() -> bool:
        return any(a.colour == "red" for a in book.store.alerts())

    publish(3)
    for _ in range(15):  # the sensor keeps reporting 55 % LEL: red after the preset's 5 s
        publish(55)
        if wait_for(red, timeout_s=1.0):
            break
    assert wait_for(red), (
        [(a.fingerprint, a.colour, a.state) for a in book.store.alerts()],
        collector.stats.detections,
        collector.collector.engine.judged_readings,
        collector.collector.engine.late_readings,
        collector.stats.messages_received,
    )
    (alert,) = [a for a in book.store.alerts() if a.fingerprint.detector == "combustible-gas"]
    # the fast rise was raised first: the dispatcher's work order is the unit's incident
    leader = book.store.get(alert.incident)
    assert leader is not None and leader.state in (State.OPEN, State.DISPATCHED)

    now = lambda: round(time.time() * 1000)  # noqa: E731
    book.acknowledge(leader.id, actor="grid-officer-7", note="on my way", now_ms=now())
    assert book.store.get(alert.id).state == State.ACKNOWLEDGED  # the incident, as one
    publish(10)  # back below every clear value
    assert wait_for(lambda: not any(a.condition_active for a in book.store.alerts()))
    book.resolve(leader.id, actor="grid-officer-7", note="valve closed", now_ms=now())
    publish(3)  # the device keeps reporting: alive
    assert wait_for(lambda: {a.state for a in book.store.alerts()} == {State.CLOSED})

    types = [e.type.value for e in book.history(alert.id)]
    assert types[0] == "opened" and types[-2:] == ["resolved", "closed"]
    assert "acknowledged" in types and "condition_cleared" in types
    stored = wait_rows(
        settings.influx,
        f'SELECT * FROM "alert_events" WHERE "alert_id" = {alert.id} GROUP BY *',
        len(types),
    )
    assert sorted(r["seq"] for r in stored) == list(range(1, len(types) + 1))
    assert {r["grid"] for r in stored} == {"CP-01"}
    assert any(r["note"] == "valve closed" and r["actor"] == "grid-officer-7" for r in stored)

    # The work-order system got the whole loop, signed, in order, each event once.
    def delivered() -> list[str]:
        return [m["event"]["type"] for m in Receiver.processed if m["alert"]["id"] == alert.id]

    assert wait_for(lambda: "closed" in delivered())
    assert delivered() == [e.type.value for e in book.history(alert.id)]
    assert Receiver.bad_signatures == 0
    collector.stop()
