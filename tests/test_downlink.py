"""The field downlink: on-site displays see their unit's worst colour; guards can ack."""

from __future__ import annotations

import json
import time

import pytest

from collector.alerts.model import State
from collector.detection import DetectionEvent
from tests.test_alerts_e2e import wait_for


def raised(device: str, unit: str, colour: str) -> DetectionEvent:
    return DetectionEvent(
        "raised",
        "combustible-gas",
        device,
        "chem",
        "lel_pct",
        unit,
        colour,
        "green",
        40.0,
        round(time.time() * 1000),
    )  # type: ignore[arg-type]


@pytest.mark.slow
def test_units_see_their_worst_colour_and_can_acknowledge_on_site(
    make_settings, run_collector, publisher, subscribe
) -> None:
    settings = make_settings()
    collector = run_collector(settings)
    book = collector.collector.alerts
    display = subscribe("smartunit/v1/units/+/alert")

    (orange,) = book.on_detection(raised("gas-1", "xinghua", "orange"))
    (red,) = book.on_detection(raised("gas-2", "xinghua", "red"))
    book.on_detection(raised("gas-9", "donghai", "yellow"))

    def latest(unit: str) -> dict | None:
        found = [m for m in display.messages if m.topic == f"smartunit/v1/units/{unit}/alert"]
        return json.loads(found[-1].payload) if found and found[-1].payload else None

    assert wait_for(lambda: (latest("xinghua") or {}).get("count") == 2)
    assert latest("xinghua")["colour"] == "red"
    assert wait_for(lambda: (latest("donghai") or {}).get("colour") == "yellow")
    # a display switched on later gets the current state at once: it is retained
    late = subscribe("smartunit/v1/units/xinghua/alert")
    assert wait_for(lambda: bool(late.messages))
    assert late.messages[0].retain and json.loads(late.messages[0].payload)["colour"] == "red"

    # a guard at donghai cannot acknowledge xinghua's alert; one at xinghua can
    publisher.publish(
        "smartunit/v1/units/donghai/ack", json.dumps({"alert_id": red.alert_id, "actor": "guard-9"})
    )
    publisher.publish(
        "smartunit/v1/units/xinghua/ack",
        json.dumps({"alert_id": red.alert_id, "actor": "guard-3", "note": "evacuating hall B"}),
    )
    publisher.publish("smartunit/v1/units/xinghua/ack", b"not json")
    assert wait_for(lambda: book.store.get(red.alert_id).state == State.ACKNOWLEDGED)
    acks = [e for e in book.history(red.alert_id) if e.type.value == "acknowledged"]
    assert [(e.actor, e.note) for e in acks] == [("field:xinghua:guard-3", "evacuating hall B")]
    # a name that would read backwards in the trail is kept, without its control characters
    publisher.publish(
        "smartunit/v1/units/xinghua/ack",
        json.dumps(
            {"alert_id": orange.alert_id, "actor": "guard\u202e-4\x07", "note": "a\u202eb\n"}
        ),
    )
    assert wait_for(lambda: book.store.get(orange.alert_id).state == State.ACKNOWLEDGED)
    acks = [e for e in book.history(orange.alert_id) if e.type.value == "acknowledged"]
    assert [(e.actor, e.note) for e in acks] == [("field:xinghua:guard-4", "ab\n")]

    # when every alert of a unit is closed, its retained state is cleared
    now = round(time.time() * 1000)
    for alert_id in (orange.alert_id, red.alert_id):
        book.on_detection(
            DetectionEvent(
                "cleared",
                "combustible-gas",
                book.store.get(alert_id).fingerprint.device,
                "chem",
                "lel_pct",
                "xinghua",
                "green",
                "red",
                3.0,
                now,
            )
        )
        book.resolve(alert_id, actor="desk", now_ms=now)
    book.verify(now + 10 * 60_000, lambda device: True)
    assert wait_for(
        lambda: (
            [m.payload for m in display.messages if m.topic == "smartunit/v1/units/xinghua/alert"][
                -1
            ]
            == b""
        )
    )
    collector.stop()
