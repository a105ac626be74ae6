"""The five-step loop on a real SQLite store: states, audit trail, idempotency, durability."""

from __future__ import annotations

import math
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from collector.alerts.lifecycle import AlertBook
from collector.alerts.model import EventType, State
from collector.alerts.store import SqliteAlertStore
from collector.detection import DetectionEvent
from collector.detectionevent import EventKind
from collector.errors import TransitionError

MIN = 60_000


def detection(
    kind: EventKind,
    colour: str,
    at_ms: int,
    value: float = 30.0,
    device: str = "gas-1",
    unit: str = "xinghua",
) -> DetectionEvent:
    return DetectionEvent(
        kind, "combustible-gas", device, "chem", "lel_pct", unit, colour, "green", value, at_ms
    )


@pytest.fixture
def book(tmp_path: Path) -> AlertBook:
    return AlertBook(SqliteAlertStore(tmp_path / "alerts.db"), verify_window_s=300)


def alive(_device: str) -> bool:
    return True


def test_the_full_loop_from_detection_to_verified_close(book: AlertBook) -> None:
    (opened,) = book.on_detection(detection("raised", "orange", 0))
    alert_id = opened.alert_id
    assert opened.type == EventType.OPENED and opened.state == State.OPEN
    assert [e.type for e in book.on_detection(detection("changed", "red", 1 * MIN, 55))] == [
        EventType.COLOUR_CHANGED
    ]
    book.dispatched(alert_id, now_ms=2 * MIN)
    book.acknowledge(alert_id, actor="grid-officer-7", note="on my way", now_ms=5 * MIN)
    book.on_detection(detection("cleared", "green", 20 * MIN, 10))
    book.resolve(alert_id, actor="grid-officer-7", note="valve closed", now_ms=22 * MIN)
    assert book.verify(24 * MIN, alive) == []  # normal for 2 minutes only
    (closed,) = book.verify(27 * MIN, alive)  # 5 minutes after the resolution
    assert closed.type == EventType.CLOSED and closed.state == State.CLOSED

    history = book.history(alert_id)
    assert [e.type for e in history] == [
        EventType.OPENED,
        EventType.COLOUR_CHANGED,
        EventType.DISPATCHED,
        EventType.ACKNOWLEDGED,
        EventType.CONDITION_CLEARED,
        EventType.RESOLVED,
        EventType.CLOSED,
    ]
    assert [e.seq for e in history] == list(range(1, 8))
    assert history[3].actor == "grid-officer-7" and history[3].note == "on my way"
    assert len({e.id for e in history}) == 7  # idempotency keys are unique


def test_readings_abnormal_during_verification_reopen(book: AlertBook) -> None:
    (opened,) = book.on_detection(detection("raised", "orange", 0))
    book.acknowledge(opened.alert_id, actor="a", now_ms=MIN)
    book.on_detection(detection("cleared", "green", 2 * MIN, 10))
    book.resolve(opened.alert_id, actor="a", now_ms=3 * MIN)
    (reopened,) = book.on_detection(detection("raised", "orange", 4 * MIN))
    assert reopened.type == EventType.REOPENED and reopened.state == State.REOPENED
    assert book.verify(60 * MIN, alive) == []  # a reopened alert is not verified
    again = book.get(opened.alert_id)
    assert again is not None and not again.acknowledged  # it needs someone again
    assert again.level_since_ms == 4 * MIN  # a fresh acknowledgement deadline
    assert [e.type for e in book.acknowledge(opened.alert_id, actor="a", now_ms=5 * MIN)] == [
        EventType.ACKNOWLEDGED
    ]
    # one alert per fingerprint: the same alert, not a new one
    assert [a.id for a in book.find()] == [opened.alert_id]


def test_a_condition_that_clears_by_itself_still_needs_acknowledgement(book: AlertBook) -> None:
    (opened,) = book.on_detection(detection("raised", "yellow", 0))
    (recovered,) = book.on_detection(detection("cleared", "green", MIN, 3))
    assert recovered.state == State.RECOVERED
    assert book.verify(60 * MIN, alive) == []  # nobody acknowledged: not closed
    book.acknowledge(opened.alert_id, actor="b", now_ms=61 * MIN)
    book.resolve(opened.alert_id, actor="b", note="false alarm: calibration", now_ms=62 * MIN)
    assert [e.state for e in book.verify(67 * MIN, alive)] == [State.CLOSED]


def test_a_silent_device_is_not_verified(book: AlertBook) -> None:
    (opened,) = book.on_detection(detection("raised", "orange", 0))
    book.on_detection(detection("cleared", "green", MIN, 3))
    book.resolve(opened.alert_id, actor="c", now_ms=2 * MIN)
    assert book.verify(60 * MIN, lambda device: False) == []
    assert book.get(opened.alert_id).state == State.RESOLVED


def test_actions_are_idempotent_and_refused_when_impossible(book: AlertBook) -> None:
    (opened,) = book.on_detection(detection("raised", "orange", 0))
    assert len(book.acknowledge(opened.alert_id, actor="d", now_ms=MIN)) == 1
    assert book.acknowledge(opened.alert_id, actor="d", now_ms=2 * MIN) == []
    resolved = book.resolve(opened.alert_id, actor="d", now_ms=3 * MIN)
    assert book.resolve(opened.alert_id, actor="d", now_ms=4 * MIN) == []
    assert [e.type for e in resolved] == [EventType.RESOLVED]
    book.on_detection(detection("cleared", "green", 3 * MIN, 1))
    book.verify(9 * MIN, alive)
    with pytest.raises(TransitionError):
        book.resolve(opened.alert_id, actor="d", now_ms=10 * MIN)  # closed is closed
    assert book.comment(opened.alert_id, actor="auditor", note="checked", now_ms=11 * MIN)
    with pytest.raises(KeyError):
        book.acknowledge(999, actor="x", now_ms=0)


def test_resolving_without_acknowledging_records_both(book: AlertBook) -> None:
    (opened,) = book.on_detection(detection("raised", "orange", 0))
    events = book.resolve(opened.alert_id, actor="e", note="fixed on site", now_ms=MIN)
    assert [e.type for e in events] == [EventType.ACKNOWLEDGED, EventType.RESOLVED]


def test_nothing_is_forgotten_across_a_reopen_of_the_store(tmp_path: Path) -> None:
    path = tmp_path / "alerts.db"
    first = AlertBook(SqliteAlertStore(path))
    (opened,) = first.on_detection(detection("raised", "red", 0, 60))
    first.acknowledge(opened.alert_id, actor="f", now_ms=MIN)
    first.close()

    second = AlertBook(SqliteAlertStore(path))
    alert = second.get(opened.alert_id)
    assert alert is not None
    assert (alert.state, alert.colour, alert.acknowledged) == (State.ACKNOWLEDGED, "red", True)
    # the same fingerprint keeps its alert; the sequence continues
    (changed,) = second.on_detection(detection("changed", "orange", 2 * MIN, 30))
    assert (changed.alert_id, changed.seq) == (opened.alert_id, 3)


def test_the_database_itself_refuses_two_active_alerts_per_fingerprint(tmp_path: Path) -> None:
    store = SqliteAlertStore(tmp_path / "alerts.db")
    book = AlertBook(store)
    (opened,) = book.on_detection(detection("raised", "red", 0))
    alert = book.get(opened.alert_id)
    assert alert is not None
    with pytest.raises(sqlite3.IntegrityError):
        store.alerts.create(alert, [])


def test_silence_events_open_alerts_without_a_value(book: AlertBook) -> None:
    silent = DetectionEvent(
        "silent", "silence", "gw-1", "gateway", "", "", "orange", "green", math.nan, 0
    )
    (opened,) = book.on_detection(silent)
    assert opened.value is None
    resumed = DetectionEvent(
        "resumed", "silence", "gw-1", "gateway", "", "", "green", "orange", math.nan, MIN
    )
    assert [e.state for e in book.on_detection(resumed)] == [State.RECOVERED]


def test_detections_and_people_can_change_one_alert_at_the_same_time(book: AlertBook) -> None:
    """The collector loop and HTTP API threads share the book: no lost update, no gap."""
    import threading

    (opened,) = book.on_detection(detection("raised", "orange", 0))
    errors: list[BaseException] = []

    def detections() -> None:
        try:
            for i in range(200):
                colour = "red" if i % 2 else "orange"
                book.on_detection(detection("changed", colour, i + 1, 40.0 + i % 2))
        except BaseException as exc:
            errors.append(exc)

    def people() -> None:
        try:
            for i in range(200):
                book.comment(opened.alert_id, actor="desk", note=f"note {i}", now_ms=i + 1)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=detections), threading.Thread(target=people)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    history = book.history(opened.alert_id)
    assert [e.seq for e in history] == list(range(1, len(history) + 1))
    assert sum(e.type == EventType.COMMENTED for e in history) == 200
    # the first of the 200 repeats the alert's colour (orange): 199 changes
    assert sum(e.type == EventType.COLOUR_CHANGED for e in history) == 199


def test_unacknowledged_alerts_climb_the_hierarchy_until_someone_acknowledges(
    tmp_path: Path,
) -> None:
    from collector.alerts.notify import Notifier
    from collector.config import ReceiverSettings

    district_desk = ReceiverSettings(
        name="district", url="http://desk.invalid/", levels=["district"]
    )
    grid_officer = ReceiverSettings(name="grid", url="http://grid.invalid/", levels=["grid"])
    store = SqliteAlertStore(tmp_path / "alerts.db")
    book = AlertBook(store, router=Notifier([district_desk, grid_officer], "http://c").route)
    deadlines = {"red": 60.0, "yellow": 600.0}  # compressed through configuration

    (red,) = book.on_detection(detection("raised", "red", 0))
    (yellow,) = book.on_detection(detection("raised", "yellow", 0, device="gas-2", unit="donghai"))
    assert book.escalate(59_000, deadlines) == []
    climbed = [book.escalate(t * 60_000, deadlines) for t in (1, 2, 3)]
    assert [[e.note.split(": ")[1] for e in step] for step in climbed] == [
        ["grid -> community"],
        ["community -> street"],
        ["street -> district"],
    ]
    assert book.get(yellow.alert_id).level == "grid"  # its deadline is longer

    # the district desk hears of it only now; the grid officer has heard all along
    def receivers(alert_id: int) -> set[str]:
        return set(book.get(alert_id).receivers)

    assert receivers(red.alert_id) == {"grid", "district"}
    book.acknowledge(red.alert_id, actor="district-desk", now_ms=3 * 60_000 + 1)
    assert book.escalate(60 * 60_000, deadlines) == [
        e for e in book.history(yellow.alert_id) if e.seq > 1
    ]  # only the yellow one moves
    assert book.get(red.alert_id).level == "district"  # acknowledged: it stays


def test_a_red_that_recovers_before_anyone_saw_it_keeps_its_deadline_and_climbs(
    book: AlertBook,
) -> None:
    from collector.alerts.model import ack_due_at_ms

    deadlines = {"red": 60.0}
    (red,) = book.on_detection(detection("raised", "red", 0))
    book.on_detection(detection("cleared", "green", 10_000))
    recovered = book.get(red.alert_id)
    assert recovered.state == State.RECOVERED
    assert ack_due_at_ms(recovered, deadlines) == 60_000  # nobody saw it: still awaited
    (climbed,) = book.escalate(60_000, deadlines)
    assert climbed.type == EventType.ESCALATED and climbed.state == State.RECOVERED
    assert book.get(red.alert_id).level == "community"

    book.acknowledge(red.alert_id, actor="desk", now_ms=61_000)
    assert ack_due_at_ms(book.get(red.alert_id), deadlines) is None
    assert book.escalate(10 * MIN, deadlines) == []


def test_a_sweep_acts_on_what_is_true_when_it_acts_not_when_it_looked(
    book: AlertBook, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Escalation and verification scan without the lock (a live alert must not wait for
    the scan), so a person may act between the scan and the change: their act wins."""
    (red,) = book.on_detection(detection("raised", "red", 0))
    gone, _joined = book.on_detection(detection("raised", "red", 0, device="gas-2"))
    book.on_detection(detection("cleared", "green", MIN, device="gas-2"))
    book.resolve(gone.alert_id, actor="handler", now_ms=MIN)
    seen_by_the_scan = book.find()
    book.acknowledge(red.alert_id, actor="desk", now_ms=MIN)  # meanwhile, a person acts
    book.on_detection(detection("raised", "red", 2 * MIN, device="gas-2"))  # it is back

    monkeypatch.setattr(book._alerts, "matching", lambda **_: seen_by_the_scan)
    assert book.escalate(30 * MIN, {"red": 60.0}) == []
    assert book.verify(30 * MIN, alive) == []
    assert book.get(red.alert_id).level == "grid"
    assert book.get(gone.alert_id).state != State.CLOSED


def test_escalation_clocks_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "alerts.db"
    (red,) = AlertBook(SqliteAlertStore(path)).on_detection(detection("raised", "red", 0))
    restarted = AlertBook(SqliteAlertStore(path))  # the deadline was stored, not kept in RAM
    (escalated,) = restarted.escalate(61_000, {"red": 60.0})
    assert escalated.type == EventType.ESCALATED and escalated.alert_id == red.alert_id


def _routed_book(tmp_path: Path) -> AlertBook:
    from collector.alerts.notify import Notifier
    from collector.config import ReceiverSettings

    desk = ReceiverSettings(name="desk", url="http://desk.invalid/")
    store = SqliteAlertStore(tmp_path / "alerts.db")
    return AlertBook(
        store, router=Notifier([desk], "http://c").route, flap_window_s=600, flap_toggles=4
    )


def _outbox_keys(tmp_path: Path) -> list[str]:
    """Everything queued for delivery (due() shows only each alert's next one)."""
    with sqlite3.connect(tmp_path / "alerts.db") as db:
        return [row[0] for row in db.execute("SELECT event_key FROM outbox ORDER BY id")]


def test_a_maintenance_window_mutes_and_pauses_escalation(tmp_path: Path) -> None:
    book = _routed_book(tmp_path)
    book.silence(
        unit="xinghua",
        starts_ms=0,
        ends_ms=30 * MIN,
        actor="park-ops",
        reason="calibrating gas detectors",
    )
    (muted,) = book.on_detection(detection("raised", "red", MIN))
    assert book.outbox_counts() == {}  # recorded, not notified
    assert book.escalate(20 * MIN, {"red": 60.0}) == []  # nobody is expected to answer
    assert [e.type for e in book.history(muted.alert_id)] == [EventType.OPENED]
    # after the window, the same alert escalates and notifies again
    (escalated,) = book.escalate(31 * MIN, {"red": 60.0})
    assert escalated.type == EventType.ESCALATED
    assert book.outbox_counts() == {"pending": 1}
    with pytest.raises(ValueError, match="one unit or one device"):
        book.silence(starts_ms=0, ends_ms=1, actor="x", reason="y")


def test_a_flapping_condition_notifies_its_state_not_every_toggle(tmp_path: Path) -> None:
    book = _routed_book(tmp_path)
    (opened,) = book.on_detection(detection("raised", "orange", 0))
    for k in range(1, 11):  # the reading hovers on the line: 10 toggles in 10 minutes
        kind: EventKind = "cleared" if k % 2 else "raised"
        book.on_detection(detection(kind, "green" if k % 2 else "orange", k * MIN))
    history = book.history(opened.alert_id)
    flagged = [e for e in history if e.type == EventType.FLAPPING]
    assert len(flagged) == 1 and "notifying the state" in flagged[0].note
    notified = _outbox_keys(tmp_path)
    # opened, the first toggles until the 4th, the flapping mark; none of the later toggles
    assert len(notified) == 5
    assert f"{opened.alert_id}-{flagged[0].seq}" in notified
    # calm again after the window: the flag is lifted, and toggles notify again
    book.on_detection(detection("cleared", "green", 30 * MIN, 3))
    last = book.history(opened.alert_id)[-1]
    assert last.type == EventType.FLAPPING and "calm again" in last.note
    assert len(_outbox_keys(tmp_path)) == 7  # the cleared condition and the calm mark


def test_a_leak_seen_by_five_sensors_is_one_incident(tmp_path: Path) -> None:
    book = _routed_book(tmp_path)
    opened = [
        book.on_detection(detection("raised", colour, k * 1000, device=f"gas-{k}"))[0]
        for k, colour in enumerate(["yellow", "orange", "orange", "red", "orange"])
    ]
    leader = opened[0].alert_id
    assert {book.get(e.alert_id).incident for e in opened} == {leader}
    joined = [e for e in book.history(leader) if e.type == EventType.INCIDENT_JOINED]
    assert len(joined) == 4
    assert book.get(leader).incident_colour == "red"
    # the dispatcher gets one work order: the leader's events only
    assert {key.split("-")[0] for key in _outbox_keys(tmp_path)} == {str(leader)}
    assert len(_outbox_keys(tmp_path)) == 5  # opened + 4 joined
    # acknowledging and resolving the incident handles every alert in it
    book.acknowledge(leader, actor="hotline:op-3", now_ms=10_000)
    assert {book.get(e.alert_id).state for e in opened} == {State.ACKNOWLEDGED}
    book.resolve(leader, actor="hotline:op-3", note="valve closed", now_ms=20_000)
    assert {book.get(e.alert_id).state for e in opened} == {State.RESOLVED}
    member_notes = [e.note for e in book.history(opened[3].alert_id) if e.actor.startswith("hot")]
    assert member_notes == [f"with incident {leader}", f"with incident {leader}"]
    # another unit's alert starts its own incident
    (other,) = book.on_detection(detection("raised", "red", 0, device="gas-9", unit="donghai"))
    assert book.get(other.alert_id).incident == other.alert_id


@pytest.mark.parametrize(
    ("module", "never"),
    [
        ("collector.alerts.lifecycle", "collector.detection"),
        ("collector.alerts.pending", "collector.detection"),
        ("collector.alerts.store", "collector.alerts.notify"),
    ],
)
def test_the_alert_parts_keep_to_their_side(module: str, never: str) -> None:
    """The book takes detections by their shape, and the store knows no receiver."""
    done = subprocess.run(
        [sys.executable, "-c", f"import sys, {module}; print({never!r} in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "False"
