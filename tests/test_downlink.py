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
    red = book.on_detection(raised("gas-2", "xinghua", "red"))[0]  # then its incident's news
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
    assert wait_for(lambda: book.get(red.alert_id).state == State.ACKNOWLEDGED)
    acks = [e for e in book.history(red.alert_id) if e.type.value == "acknowledged"]
    assert [(e.actor, e.note) for e in acks] == [("field:xinghua:guard-3", "evacuating hall B")]
    # a name that would read backwards in the trail is kept, without its control characters
    publisher.publish(
        "smartunit/v1/units/xinghua/ack",
        json.dumps(
            {"alert_id": orange.alert_id, "actor": "guard\u202e-4\x07", "note": "a\u202eb\n"}
        ),
    )
    assert wait_for(lambda: book.get(orange.alert_id).state == State.ACKNOWLEDGED)
    acks = [e for e in book.history(orange.alert_id) if e.type.value == "acknowledged"]
    assert [(e.actor, e.note) for e in acks] == [("field:xinghua:guard-4", "ab\n")]

    # when every alert of a unit is closed, its retained state is cleared
    now = round(time.time() * 1000)
    for alert_id in (orange.alert_id, red.alert_id):
        book.on_detection(
            DetectionEvent(
                "cleared",
                "combustible-gas",
                book.get(alert_id).fingerprint.device,
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


def alert_of(book, device: str, unit: str, *, family: str = "chem", detector: str = "rule"):
    event = book.on_detection(
        DetectionEvent(
            "raised",
            detector,
            device,
            family,
            "lel_pct",
            unit,
            "red",
            "green",
            40.0,
            round(time.time() * 1000),
        )  # type: ignore[arg-type]
    )[0]  # then, for a unit with an open incident, the incident's news
    return event.alert_id


@pytest.mark.slow
def test_acks_for_pseudo_units_or_on_any_other_topic_are_refused(
    make_settings, run_collector, publisher
) -> None:
    settings = make_settings()
    collector = run_collector(settings)
    book = collector.collector.alerts
    fleet = alert_of(book, "_fleet", "", family="system", detector="silence")
    operator = alert_of(book, "collector-behind", "_collector", family="system")
    unregistered = alert_of(book, "gas-x", "_unregistered")
    xinghua = alert_of(book, "gas-1", "xinghua")
    hostile = [
        ("smartunit/v1/units/_/ack", fleet),  # the fleet's alert has unit "", shown as "_"
        ("smartunit/v1/units/_fleet/ack", fleet),
        ("smartunit/v1/units/_collector/ack", operator),
        ("smartunit/v1/units/_unregistered/ack", unregistered),
        # a device named like the unit may publish its "data" and "status" under any family
        ("smartunit/v1/units/xinghua/data", xinghua),
        ("smartunit/v1/units/xinghua/status", xinghua),
    ]
    for topic, alert_id in hostile:
        publisher.publish(topic, json.dumps({"alert_id": alert_id, "actor": "intruder"}))
    # one valid ack last: once it is applied, every message before it has been judged
    other = alert_of(book, "gas-2", "xinghua")
    publisher.publish("smartunit/v1/units/xinghua/ack", json.dumps({"alert_id": other}))
    assert wait_for(lambda: book.get(other).state == State.ACKNOWLEDGED)
    for alert_id in (fleet, operator, unregistered, xinghua):
        assert book.get(alert_id).state != State.ACKNOWLEDGED, alert_id
    rejections = collector.stats.rejections
    assert rejections["ack_refused"] == 4
    assert rejections["unknown_family"] == 2  # "units" is no device family
    collector.stop()


@pytest.mark.slow
@pytest.mark.parametrize("receiver", ["bulk", "paho"])
def test_a_units_overwritten_alert_state_is_restored(
    make_settings, run_collector, publisher, subscribe, receiver
) -> None:
    settings = make_settings(mqtt={"receiver": receiver})
    collector = run_collector(settings)
    book = collector.collector.alerts
    unit = f"restore-me-{receiver}"  # the broker outlives each run: its own topics
    topic = f"smartunit/v1/units/{unit}/alert"
    display = subscribe(topic)
    alert_of(book, "gas-1", unit)
    assert wait_for(lambda: display.messages and display.messages[-1].payload)
    alert_of(book, "gas-2", unit)  # the collector's own updates are no overwrite
    assert wait_for(lambda: json.loads(display.messages[-1].payload or b"{}").get("count") == 2)
    ours = display.messages[-1].payload
    assert json.loads(ours)["colour"] == "red"

    # someone else silences the siren: green, retained
    before = collector.collector.metrics()["unit_state_overwrites_total"]
    publisher.publish(topic, json.dumps({"unit": unit, "colour": "green"}), retain=True)
    assert wait_for(lambda: len(display.messages) >= 4 and display.messages[-1].payload == ours)
    # at least: a reconnect under load replays other runs' retained states, overwrites too
    assert collector.collector.metrics()["unit_state_overwrites_total"] >= before + 1
    # a display switched on now sees the collector's state, not the intruder's
    late = subscribe(topic)
    assert wait_for(lambda: bool(late.messages))
    assert late.messages[-1].retain and late.messages[-1].payload == ours
    # a retained state for a unit without active alerts is cleared
    ghost = f"smartunit/v1/units/ghost-{receiver}/alert"
    ghost_display = subscribe(ghost)
    publisher.publish(
        ghost, json.dumps({"unit": f"ghost-{receiver}", "colour": "red"}), retain=True
    )
    assert wait_for(lambda: ghost_display.messages and ghost_display.messages[-1].payload == b"")
    assert collector.collector.metrics()["unit_state_overwrites_total"] == before + 2
    collector.stop()
