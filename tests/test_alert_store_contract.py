"""The repositories' contract, held by every alert store backend: SQLite and PostgreSQL.

Then what only a shared store (PostgreSQL) promises several instances: one delivers each
outbox row, one runs the alert clock, a change decided on a stale copy is refused.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from collector.alerts.backends import open_storage
from collector.alerts.lifecycle import AlertBook
from collector.alerts.model import EventType, Silence, State
from collector.alerts.notify import Notifier
from collector.alerts.outbox import OutboxEntry
from collector.alerts.pgstore import PgAlertStore
from collector.alerts.repositories import AlertStorage
from collector.config import ReceiverSettings
from collector.errors import AlertConflictError, AlertStoreError
from tests.postgres import PostgresServer
from tests.test_alert_lifecycle import MIN, alive, detection

DESK = ReceiverSettings(name="desk", url="http://desk.invalid/")
# What each backend raises for a second active alert of one fingerprint.
REFUSED = (sqlite3.IntegrityError, AlertConflictError)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AlertStorage]:
    url = "sqlite:///alerts.db" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    store = open_storage(url, relative_to=tmp_path)
    yield store
    store.close()


def routed(storage: AlertStorage) -> AlertBook:
    return AlertBook(storage, router=Notifier([DESK], "http://c").route, verify_window_s=300)


def test_the_loop_reads_back_the_same_from_every_backend(storage: AlertStorage) -> None:
    book = routed(storage)
    (opened,) = book.on_detection(detection("raised", "orange", 0))
    book.on_detection(detection("changed", "red", MIN, 55))
    book.acknowledge(opened.alert_id, actor="officer", note="on my way", now_ms=2 * MIN)
    book.on_detection(detection("cleared", "green", 3 * MIN, 10))
    book.resolve(opened.alert_id, actor="officer", now_ms=4 * MIN)
    (closed,) = book.verify(10 * MIN, alive)
    assert closed.state == State.CLOSED

    alert = book.get(opened.alert_id)
    assert alert is not None
    assert (alert.state, alert.colour, alert.acknowledged, alert.acknowledged_by) == (
        State.CLOSED,
        "red",
        True,
        "officer",
    )
    assert alert.hierarchy == {} and alert.value == 10
    history = book.history(opened.alert_id)
    assert [e.seq for e in history] == list(range(1, len(history) + 1))
    assert [e.type for e in history] == [
        EventType.OPENED,
        EventType.COLOUR_CHANGED,
        EventType.ACKNOWLEDGED,
        EventType.CONDITION_CLEARED,
        EventType.RESOLVED,
        EventType.CLOSED,
    ]
    assert storage.alerts.last_seq(opened.alert_id) == len(history)
    assert storage.alerts.find_active(alert.fingerprint) is None
    assert book.find(states=[State.CLOSED], unit="xinghua") == [alert]
    assert book.find(states=[State.OPEN]) == []
    # A new alarm of the same fingerprint is a new alert.
    (again,) = book.on_detection(detection("raised", "red", 11 * MIN))
    assert again.alert_id != opened.alert_id and again.seq == 1


def test_one_active_alert_per_fingerprint_is_the_database_s_rule(storage: AlertStorage) -> None:
    (opened,) = AlertBook(storage).on_detection(detection("raised", "red", 0))
    alert = storage.alerts.get(opened.alert_id)
    assert alert is not None
    with pytest.raises(REFUSED):
        storage.alerts.create(alert, [])
    assert [a.id for a in storage.alerts.matching()] == [opened.alert_id]  # nothing half-written


def test_the_outbox_rows_are_written_with_the_change_or_not_at_all(storage: AlertStorage) -> None:
    book = routed(storage)
    (opened,) = book.on_detection(detection("raised", "red", 0))
    alert = book.get(opened.alert_id)
    assert alert is not None
    (row,) = storage.outbox.due(10**13, "desk")
    assert (row.alert_id, row.seq, row.attempts) == (opened.alert_id, 1, 0)

    # A change whose events cannot be written (a seq taken) leaves no outbox row behind.
    taken = book.history(opened.alert_id)[0]
    entry = OutboxEntry("desk", "k-never", alert.id, 1, b"{}")
    with pytest.raises(Exception):  # noqa: B017 - each backend's own integrity error
        storage.alerts.save(alert, [taken], [entry])
    assert storage.outbox.counts() == {"pending": 1}


def test_create_writes_what_decide_makes_of_the_new_alert(storage: AlertStorage) -> None:
    book = routed(storage)
    (leader,) = book.on_detection(detection("raised", "yellow", 0))
    opened, joined = book.on_detection(detection("raised", "red", MIN, device="gas-2"))
    assert opened.type == EventType.OPENED and joined.type == EventType.INCIDENT_JOINED
    assert joined.alert_id == leader.alert_id and joined.seq == 2
    member = book.get(opened.alert_id)
    assert member is not None and member.incident_leader == leader.alert_id
    keys = {(r.alert_id, r.seq) for r in storage.outbox.due(10**13, "desk")}
    assert (leader.alert_id, 1) in keys  # each alert's oldest pending row only


def test_deliveries_settle_in_order_per_alert(storage: AlertStorage) -> None:
    book = routed(storage)
    (_opened,) = book.on_detection(detection("raised", "orange", 0))
    book.on_detection(detection("changed", "red", MIN, 55))
    outbox = storage.outbox
    (first,) = outbox.due(10**13, "desk")
    assert first.seq == 1  # the second waits for the first
    outbox.retry_later(first.id, 5_000, "HTTP 503")
    assert outbox.due(4_999, "desk") == []
    (again,) = outbox.due(5_000, "desk")
    assert (again.id, again.attempts) == (first.id, 1)
    assert outbox.backlogs()["desk"].pending == 2
    outbox.delivered(first.id, 6_000)
    (second,) = outbox.due(10**13, "desk")
    assert second.seq == 2
    outbox.dead(second.id, "HTTP 400")
    assert outbox.counts() == {"delivered": 1, "dead": 1}
    assert outbox.backlogs()["desk"].dead == 1
    book.on_detection(detection("cleared", "green", 2 * MIN, 10))
    assert outbox.dead_unless_receiver(["another"], "receiver not configured") == 1
    assert outbox.due(10**13, "desk") == []


def test_retry_now_makes_the_waiting_due(storage: AlertStorage) -> None:
    routed(storage).on_detection(detection("raised", "red", 0))
    (row,) = storage.outbox.due(0, "desk")
    storage.outbox.retry_later(row.id, 10**15, "down")
    assert storage.outbox.retry_now("desk") == 1
    assert [r.id for r in storage.outbox.due(0, "desk")] == [row.id]


def test_silences_are_kept_until_they_end(storage: AlertStorage) -> None:
    kept = storage.silences.add(Silence(0, "xinghua", None, 0, 10 * MIN, "ops", "works"))
    storage.silences.add(Silence(0, None, "gas-1", 0, MIN, "ops", "calibration"))
    assert kept.id > 0
    assert [s.reason for s in storage.silences.current(0)] == ["works", "calibration"]
    assert storage.silences.current(5 * MIN) == [kept]


def test_one_instance_on_its_own_store_runs_the_clock(storage: AlertStorage) -> None:
    assert storage.leads("alert-clock") and storage.leads("alert-clock")


# -- a store shared by several instances ---------------------------------------------------


@pytest.fixture
def two_instances(pg_url: str) -> Iterator[tuple[PgAlertStore, PgAlertStore]]:
    first = PgAlertStore(pg_url, holder="first", lease_s=2.0)
    second = PgAlertStore(pg_url, holder="second", lease_s=2.0)
    yield first, second
    first.close()
    second.close()


def _expire_claims(store: PgAlertStore) -> None:
    with store.database.transaction() as db:
        db.execute("UPDATE outbox SET claim_until_ms = 0")
        db.execute("UPDATE leases SET until_ms = 0")


def test_each_outbox_row_is_claimed_by_one_instance_until_its_lease_expires(
    two_instances: tuple[PgAlertStore, PgAlertStore],
) -> None:
    first, second = two_instances
    book = routed(first)
    for device in ("gas-1", "gas-2", "gas-3"):  # three alerts: three rows due at once
        book.on_detection(detection("raised", "red", 0, device=device, unit=device))
    taken = first.outbox.due(10**13, "desk", limit=2)
    rest = second.outbox.due(10**13, "desk")
    assert len(taken) == 2 and len(rest) == 1
    assert {r.id for r in taken}.isdisjoint(r.id for r in rest)
    assert second.outbox.due(10**13, "desk") == [rest[0]]  # its own, claimed again
    assert first.outbox.due(10**13, "desk") == taken  # the other's stay the other's

    _expire_claims(first)  # the first instance died holding its rows
    assert {r.id for r in second.outbox.due(10**13, "desk")} == {r.id for r in taken + rest}

    second.outbox.retry_later(rest[0].id, 0, "HTTP 503")  # a retry is anyone's
    assert [r.id for r in first.outbox.due(10**13, "desk")] == [rest[0].id]


def test_one_instance_runs_the_alert_clock_and_another_takes_over_its_expired_turn(
    two_instances: tuple[PgAlertStore, PgAlertStore],
) -> None:
    first, second = two_instances
    assert first.leads("alert-clock")
    assert not second.leads("alert-clock")
    assert first.leads("alert-clock")  # renewed
    _expire_claims(first)
    assert second.leads("alert-clock")
    assert not first.leads("alert-clock")


def test_a_change_decided_on_a_stale_copy_is_refused_and_decided_again(
    two_instances: tuple[PgAlertStore, PgAlertStore],
) -> None:
    first, second = two_instances
    here, there = routed(first), routed(second)
    (opened,) = here.on_detection(detection("raised", "red", 0))
    stale = second.alerts.get(opened.alert_id)
    assert stale is not None
    there.acknowledge(opened.alert_id, actor="desk", now_ms=MIN)  # the other instance acts

    # Decided on the stale copy, numbered after the acknowledgement it never saw.
    change = there._ledger.change(stale)
    assert change.next_seq == 3
    stale.value = 99.0
    change.record(EventType.COMMENTED, 2 * MIN, "someone", "on a stale copy")
    with pytest.raises(AlertConflictError):
        there._ledger.commit(change)

    assert here.escalate(30 * MIN, {"red": 60.0}) == []  # the acknowledgement holds
    alert = here.get(opened.alert_id)
    assert alert is not None and alert.state == State.ACKNOWLEDGED and alert.value != 99.0


def test_an_alarm_opened_by_two_instances_at_once_is_one_alert(
    two_instances: tuple[PgAlertStore, PgAlertStore],
) -> None:
    first, second = two_instances
    here, there = routed(first), routed(second)
    # The second instance decided to open it before the first's alert was committed.
    found_nothing = second.alerts.find_active
    calls = {"n": 0}

    def stale_find(fingerprint: object) -> object:
        calls["n"] += 1
        return None if calls["n"] == 1 else found_nothing(fingerprint)  # type: ignore[arg-type]

    (opened,) = here.on_detection(detection("raised", "orange", 0))
    second.alerts.find_active = stale_find  # type: ignore[method-assign,assignment]
    (changed,) = there.on_detection(detection("changed", "red", MIN, 55))
    assert (changed.alert_id, changed.type) == (opened.alert_id, EventType.COLOUR_CHANGED)
    assert len(first.alerts.matching()) == 1


def test_postgresql_gone_is_an_unavailable_store_and_the_next_use_reconnects(
    pg_url: str, postgres: PostgresServer
) -> None:
    store = PgAlertStore(pg_url, holder="one")
    book = AlertBook(store)
    (opened,) = book.on_detection(detection("raised", "red", 0))
    postgres.stop_fast()
    try:
        with pytest.raises(psycopg.OperationalError):
            book.on_detection(detection("changed", "orange", MIN))
        with pytest.raises(psycopg.OperationalError):  # still down: refused, not hung
            book.get(opened.alert_id)
    finally:
        postgres.start()
    (changed,) = book.on_detection(detection("changed", "orange", MIN))
    assert (changed.alert_id, changed.seq) == (opened.alert_id, 2)
    store.close()


def test_a_database_of_a_newer_schema_is_refused(pg_url: str) -> None:
    PgAlertStore(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    with pytest.raises(AlertStoreError, match="schema 99"):
        PgAlertStore(pg_url)
