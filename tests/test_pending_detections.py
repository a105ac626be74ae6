"""The waiting list of detections the alert store refused: order, bound, overflow policy.

The store here is the real alert book on SQLite; "unwritable" is an error raised in its
place while the test says so (the collector test makes the database file unwritable)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from collector.alerts.lifecycle import AlertBook
from collector.alerts.model import Detection, EventType
from collector.alerts.pending import PendingDetections
from collector.alerts.store import SqliteAlertStore
from collector.detection import DetectionEvent
from collector.detectionevent import EventKind


def gas(kind: EventKind, colour: str, at_ms: int, device: str = "gas-1") -> DetectionEvent:
    return DetectionEvent(
        kind, "combustible-gas", device, "chem", "lel_pct", device, colour, "", 1.0, at_ms
    )


class Store:
    def __init__(self, tmp_path: Path) -> None:
        self.storage = SqliteAlertStore(tmp_path / "alerts.db")
        self.book = AlertBook(self.storage)
        self.writable = True
        self.now = 0.0

    def apply(self, event: Detection, hierarchy: dict[str, str]) -> object:
        if not self.writable:
            raise sqlite3.OperationalError("disk I/O error")
        return self.book.on_detection(event, hierarchy)


def test_detections_wait_in_order_and_are_stored_once_the_store_takes_writes(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path)
    pending = PendingDetections(store.apply, clock=lambda: store.now)
    store.writable = False
    assert not pending.submit(gas("raised", "yellow", 0), {})
    for k, colour in enumerate(["orange", "red", "orange", "yellow"], start=1):
        pending.submit(gas("changed", colour, k * 1000), {})
    pending.submit(gas("cleared", "green", 9000), {})
    assert pending.degraded and len(pending) == 3  # the first, the worst since, the latest
    assert not pending.due()  # backing off
    store.now = 1.0
    assert pending.retry(10) == 0 and pending.failures == 2

    store.writable, store.now = True, 100.0
    assert pending.due() and pending.retry(10) == 3 and not pending.degraded
    (alert,) = store.book.find()
    history = [(e.type, e.colour, e.at_ms) for e in store.book.history(alert.id)]
    assert history == [
        (EventType.OPENED, "yellow", 0),  # opened when it happened
        (EventType.COLOUR_CHANGED, "red", 2000),  # its peak
        (EventType.RECOVERED, "red", 9000),  # where the readings are now
    ]
    assert pending.take_peak() == 3 and pending.take_peak() == 0


def test_a_full_waiting_list_gives_up_the_least_severe_fingerprint(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.writable = False
    pending = PendingDetections(store.apply, max_fingerprints=2, clock=lambda: store.now)
    pending.submit(gas("raised", "red", 0, "gas-1"), {})
    pending.submit(gas("raised", "blue", 0, "gas-2"), {})
    pending.submit(gas("raised", "red", 0, "gas-3"), {})
    assert pending.dropped == 1 and len(pending) == 2
    store.writable, store.now = True, 100.0
    pending.retry(10)
    assert sorted(a.fingerprint.device for a in store.book.find()) == ["gas-1", "gas-3"]


def test_a_join_is_stored_with_its_alert_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fails between the new alert and its incident leader's change: a retry must
    find neither stored, or the leader would never hear of the alert that joined."""
    store = Store(tmp_path)
    pending = PendingDetections(store.apply, clock=lambda: store.now)
    tank = DetectionEvent(
        "raised", "tank-high", "tank-1", "chem", "level_pct", "xinghua", "yellow", "", 90.0, 0
    )  # type: ignore[arg-type]
    red = DetectionEvent(
        "raised", "combustible-gas", "gas-1", "chem", "lel_pct", "xinghua", "red", "", 55.0, 1
    )  # type: ignore[arg-type]
    assert pending.submit(tank, {})
    sqlite_store = store.storage.alerts
    insert_events = sqlite_store._insert_events
    failing = {"left": 1}

    def fails_at_the_leader(db, alert, events):  # type: ignore[no-untyped-def]
        if alert.fingerprint.device == "tank-1" and failing["left"]:
            failing["left"] -= 1
            raise sqlite3.OperationalError("disk I/O error")
        return insert_events(db, alert, events)

    monkeypatch.setattr(sqlite_store, "_insert_events", fails_at_the_leader)
    assert not pending.submit(red, {})
    assert [a.fingerprint.device for a in sqlite_store.matching()] == ["tank-1"]  # all or none
    store.now = 100.0
    assert pending.retry(10) == 1
    leader, member = sqlite_store.matching()
    assert member.incident == leader.id
    assert [e.type for e in store.book.history(leader.id)][-1] == EventType.INCIDENT_JOINED
