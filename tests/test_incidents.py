"""Incidents on a real SQLite store: each alert's own colour, the incident's worst colour,
and acknowledgements that cover what was there when they were given."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson

from collector.alerts.lifecycle import AlertBook
from collector.alerts.model import EventType, State
from collector.alerts.notify import Notifier, _matches
from collector.alerts.store import SqliteAlertStore
from collector.config import ReceiverSettings
from collector.detection import DetectionEvent
from collector.detectionevent import EventKind

MIN = 60_000
DEADLINES = {"red": 60.0, "orange": 600.0, "yellow": 3600.0}


def detection(
    kind: EventKind,
    colour: str,
    at_ms: int,
    device: str,
    quantity: str = "lel_pct",
    unit: str = "xinghua",
) -> DetectionEvent:
    return DetectionEvent(
        kind, "threshold", device, "chem", quantity, unit, colour, "green", 30.0, at_ms
    )


def routed_book(tmp_path: Path, *receivers: ReceiverSettings) -> AlertBook:
    store = SqliteAlertStore(tmp_path / "alerts.db")
    return AlertBook(store, router=Notifier(receivers, "http://console").route)


def outbox(tmp_path: Path, receiver: str) -> list[dict]:
    with sqlite3.connect(tmp_path / "alerts.db") as db:
        rows = db.execute(
            "SELECT payload FROM outbox WHERE receiver = ? ORDER BY id", (receiver,)
        ).fetchall()
    return [orjson.loads(row[0]) for row in rows]


def test_a_red_alert_in_a_yellow_incident_reaches_an_orange_only_receiver(tmp_path: Path) -> None:
    desk = ReceiverSettings(name="desk", url="http://desk.invalid/", min_colour="orange")
    each = ReceiverSettings(
        name="each", url="http://each.invalid/", min_colour="orange", group_incidents=False
    )
    book = routed_book(tmp_path, desk, each)
    (tank,) = book.on_detection(detection("raised", "yellow", 0, "tank-1", "level_pct"))
    assert outbox(tmp_path, "desk") == outbox(tmp_path, "each") == []  # yellow: not theirs

    gas = book.on_detection(detection("raised", "red", MIN, "gas-1"))[0]
    # the grouping desk: one work order, the leader's, now that the incident is red
    (joined,) = outbox(tmp_path, "desk")
    assert joined["event"]["type"] == "incident_joined"
    assert joined["alert"]["id"] == tank.alert_id and joined["alert"]["colour"] == "yellow"
    assert joined["alert"]["incident_colour"] == "red"
    assert f"alert {gas.alert_id} (gas-1 lel_pct) joined, red" in joined["event"]["note"]
    # the other desk: the red alert on its own, with the incident's colour
    (opened,) = outbox(tmp_path, "each")
    assert opened["alert"]["id"] == gas.alert_id and opened["alert"]["incident"] == tank.alert_id
    assert opened["alert"]["incident_colour"] == "red"

    # the red alert escalates on its own (red) deadline, the yellow leader does not yet
    escalated = book.escalate(2 * MIN, DEADLINES)
    assert [(e.alert_id, e.type) for e in escalated] == [
        (gas.alert_id, EventType.ESCALATED),
        (tank.alert_id, EventType.INCIDENT_ESCALATED),
    ]
    assert book.get(tank.alert_id).level == "grid"
    assert outbox(tmp_path, "desk")[-1]["event"]["type"] == "incident_escalated"
    assert outbox(tmp_path, "each")[-1]["event"]["type"] == "escalated"


def test_an_escalated_member_brings_the_incident_to_the_desk_of_its_level(
    tmp_path: Path,
) -> None:
    district = ReceiverSettings(name="district", url="http://d.invalid/", levels=["community"])
    book = routed_book(tmp_path, district)
    (tank,) = book.on_detection(detection("raised", "yellow", 0, "tank-1", "level_pct"))
    book.on_detection(detection("raised", "red", 0, "gas-1"))
    assert outbox(tmp_path, "district") == []
    book.escalate(MIN, DEADLINES)  # the red member climbs to community
    (told,) = outbox(tmp_path, "district")
    assert told["alert"]["id"] == tank.alert_id
    assert told["event"]["type"] == "incident_escalated"


def test_an_acknowledgement_covers_what_was_there_when_it_was_given(tmp_path: Path) -> None:
    book = routed_book(tmp_path)
    (tank,) = book.on_detection(detection("raised", "yellow", 0, "tank-1", "level_pct"))
    book.acknowledge(tank.alert_id, actor="desk", now_ms=MIN)

    gas = book.on_detection(detection("raised", "red", 2 * MIN, "gas-1"))[0]
    red = book.get(gas.alert_id)
    assert red is not None and red.state == State.OPEN and not red.acknowledged
    # the incident the desk acknowledged was yellow: it needs the desk again
    leader = book.get(tank.alert_id)
    assert leader is not None and leader.state == State.OPEN and not leader.acknowledged
    assert book.escalate(3 * MIN + 1, DEADLINES)[0].alert_id == gas.alert_id  # red: 1 min

    # a fresh acknowledgement of the leader covers the red alert too
    book.acknowledge(tank.alert_id, actor="desk", now_ms=4 * MIN)
    assert {book.get(i).state for i in (tank.alert_id, gas.alert_id)} == {State.ACKNOWLEDGED}
    assert book.acknowledge(tank.alert_id, actor="desk", now_ms=5 * MIN) == []  # idempotent


def test_an_acknowledged_alert_that_rises_needs_acknowledgement_again(tmp_path: Path) -> None:
    book = routed_book(tmp_path)
    (gas,) = book.on_detection(detection("raised", "orange", 0, "gas-1"))
    book.acknowledge(gas.alert_id, actor="desk", now_ms=MIN)
    book.on_detection(detection("changed", "yellow", 2 * MIN, "gas-1"))
    book.on_detection(detection("changed", "orange", 3 * MIN, "gas-1"))  # what was seen
    assert book.get(gas.alert_id).state == State.ACKNOWLEDGED

    (rose,) = book.on_detection(detection("changed", "red", 4 * MIN, "gas-1"))
    assert rose.state == State.OPEN and "above the orange acknowledged" in rose.note
    # its own (red) deadline, counted from the rise
    assert book.escalate(5 * MIN - 1, DEADLINES) == []
    (climbed,) = book.escalate(5 * MIN, DEADLINES)
    assert climbed.type == EventType.ESCALATED


def test_a_hierarchy_prefix_matches_whole_segments() -> None:
    from collector.alerts.model import Alert, Fingerprint

    alert = Alert(
        id=1,
        fingerprint=Fingerprint("gas-1", "lel_pct", "threshold"),
        state=State.OPEN,
        colour="red",
        family="chem",
        unit="xinghua",
        hierarchy={"city": "suzhou", "district": "zjg", "street": "park"},
        value=None,
        started_at_ms=0,
        updated_at_ms=0,
    )

    def takes(prefix: str) -> bool:
        receiver = ReceiverSettings(name="r", url="http://r.invalid/", hierarchy_prefix=prefix)
        return _matches(receiver, alert)

    assert takes("") and takes("suzhou") and takes("suzhou/zjg") and takes("suzhou/zjg/park/")
    assert not takes("suzhou/zj") and not takes("suzhou/zjg/pa") and not takes("suz")


def test_an_alarm_after_the_incident_was_resolved_is_a_work_order_of_its_own(
    tmp_path: Path,
) -> None:
    """A resolved incident only waits for verification: nobody works on it any more. A
    red alarm that comes meanwhile must reach the grouping desks as a new work order,
    in either format, and stay with them after the old incident closes."""
    desk = ReceiverSettings(name="desk", url="http://desk.invalid/")
    alerta = ReceiverSettings(name="alerta", url="http://alerta.invalid/", format="alertmanager")
    book = routed_book(tmp_path, desk, alerta)
    (tank,) = book.on_detection(detection("raised", "yellow", 0, "tank-1", "level_pct"))
    book.on_detection(detection("cleared", "green", MIN, "tank-1", "level_pct"))
    book.resolve(tank.alert_id, actor="desk", note="level sensor cleaned", now_ms=2 * MIN)

    (gas,) = [
        e
        for e in book.on_detection(detection("raised", "red", 3 * MIN, "gas-1"))
        if e.type == EventType.OPENED
    ]
    assert book.get(gas.alert_id).incident == gas.alert_id
    native = outbox(tmp_path, "desk")[-1]
    assert native["event"]["type"] == "opened" and native["alert"]["id"] == gas.alert_id
    message = outbox(tmp_path, "alerta")[-1]
    assert message["status"] == "firing"
    assert message["alerts"][0]["labels"]["instance"] == "gas-1"
    assert message["alerts"][0]["labels"]["severity"] == "critical"

    # the old incident closes; an alert joining later joins the new one
    book.verify(20 * MIN, lambda device: True)
    assert book.get(tank.alert_id).state == State.CLOSED
    pump, *told_leader = book.on_detection(
        detection("raised", "orange", 21 * MIN, "pump-1", "temp_c")
    )
    assert [e.alert_id for e in told_leader] == [gas.alert_id]
    assert book.get(pump.alert_id).incident == gas.alert_id
    assert outbox(tmp_path, "desk")[-1]["event"]["type"] == "incident_joined"


def test_outside_the_registry_each_device_is_an_incident_of_its_own(tmp_path: Path) -> None:
    """Devices the registry does not know (and the service's own alarms about devices)
    share no place: one device's alerts make one incident, another's another."""
    book = routed_book(tmp_path)
    (stray,) = book.on_detection(detection("raised", "red", 0, "stray-1", unit="_unregistered"))
    (other,) = book.on_detection(detection("raised", "red", MIN, "stray-2", unit="_unregistered"))
    second, told = book.on_detection(
        detection("raised", "yellow", MIN, "stray-2", "level_pct", unit="_unregistered")
    )
    assert book.get(other.alert_id).incident == other.alert_id  # not stray-1's
    assert book.get(second.alert_id).incident == other.alert_id  # its own device's
    assert told.alert_id == other.alert_id and told.type == EventType.INCIDENT_JOINED
    (limited,) = book.on_detection(detection("raised", "yellow", MIN, "dev-9", unit="_collector"))
    assert book.get(limited.alert_id).incident == limited.alert_id

    book.acknowledge(stray.alert_id, actor="desk", now_ms=2 * MIN)
    assert [book.get(i).acknowledged for i in (other.alert_id, second.alert_id)] == [False] * 2
    book.acknowledge(other.alert_id, actor="desk", now_ms=2 * MIN)  # covers its own device's
    assert book.get(second.alert_id).acknowledged
