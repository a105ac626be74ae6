"""What the SQLite and the PostgreSQL alert stores do alike: their queries, written once
with ``?`` placeholders (a store's ``Dialect`` turns them into its driver's), how alerts,
events, outbox rows and silences become rows and come back from them, and the repository
methods that only run such queries (``AlertStatements``, ``OutboxStatements``).

What differs stays in each store: how a statement runs, how a new row's id comes back, how
a duplicate outbox entry is ignored, and PostgreSQL's claims, leases and refusal of a
stale change (collector/alerts/pgstore.py).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from collector.alerts.model import (
    Alert,
    AlertEvent,
    EventType,
    Fingerprint,
    Silence,
    State,
    bookkeeping,
    with_bookkeeping,
)
from collector.alerts.outbox import Backlog, OutboxEntry, OutboxRow
from collector.alerts.repositories import Decide, Write


@dataclasses.dataclass(frozen=True, kw_only=True)
class Dialect:
    """A database's way of writing the shared queries."""

    placeholder: str
    # what the driver takes for a boolean column: SQLite stores 0/1, PostgreSQL a BOOLEAN
    flag: Callable[[bool], Any]
    # a new row's id: SQLite's cursor has it, PostgreSQL sends it back
    returning_id: str = ""
    # what an outbox row leaving its sender's hands (delivered, dead, to be tried again)
    # gives up besides its status
    release: str = ""

    def sql(self, query: str) -> str:
        return query.replace("?", self.placeholder)


SQLITE = Dialect(placeholder="?", flag=int)
POSTGRES = Dialect(
    placeholder="%s",
    flag=bool,
    returning_id=" RETURNING id",
    release=", claimed_by = NULL, claim_until_ms = 0",
)

# -- alerts and their events ---------------------------------------------------------------

INSERT_ALERT = (
    "INSERT INTO alerts (fingerprint, device, quantity, detector, state, colour, family, unit,"
    " hierarchy, value, started_at_ms, updated_at_ms, condition_active,"
    " condition_changed_at_ms, acknowledged, extra) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
UPDATE_ALERT = (
    "UPDATE alerts SET state = ?, colour = ?, family = ?, unit = ?, hierarchy = ?, "
    "value = ?, started_at_ms = ?, updated_at_ms = ?, condition_active = ?, "
    "condition_changed_at_ms = ?, acknowledged = ?, extra = ?"
)
INSERT_EVENTS = "INSERT INTO alert_events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
ALERT_COLUMNS = (
    "id, device, quantity, detector, state, colour, family, unit, hierarchy, value, "
    "started_at_ms, updated_at_ms, condition_active, condition_changed_at_ms, "
    "acknowledged, extra"
)


def alert_key_values(alert: Alert) -> tuple[Any, ...]:
    """The columns that name an alert, inserted once."""
    fingerprint = alert.fingerprint
    return fingerprint.key(), fingerprint.device, fingerprint.quantity, fingerprint.detector


def alert_values(alert: Alert, dialect: Dialect) -> tuple[Any, ...]:
    """The columns a change writes, in ``UPDATE_ALERT``'s order."""
    return (
        alert.state.value,
        alert.colour,
        alert.family,
        alert.unit,
        json.dumps(alert.hierarchy),
        alert.value,
        alert.started_at_ms,
        alert.updated_at_ms,
        dialect.flag(alert.condition_active),
        alert.condition_changed_at_ms,
        dialect.flag(alert.acknowledged),
        json.dumps(bookkeeping(alert)),
    )


def alert_from_row(row: Sequence[Any]) -> Alert:
    """An alert from ``ALERT_COLUMNS`` (anything after them is the caller's)."""
    alert = Alert(
        id=int(row[0]),
        fingerprint=Fingerprint(row[1], row[2], row[3]),
        state=State(row[4]),
        colour=row[5],
        family=row[6],
        unit=row[7],
        hierarchy=json.loads(row[8]),
        value=row[9],
        started_at_ms=int(row[10]),
        updated_at_ms=int(row[11]),
        condition_active=bool(row[12]),
        condition_changed_at_ms=int(row[13]),
        acknowledged=bool(row[14]),
    )
    return with_bookkeeping(alert, json.loads(row[15]))


class AlertStatements:
    """What both stores' alert repositories do alike: reads through their ``_rows``
    (``_columns`` read into an alert by ``_alert``), and around their own ``_write`` (one
    alert's new row, events and outbox entries) several changes, or a new alert and all
    that ``decide`` makes of it, in one transaction."""

    _transaction: Callable[[], AbstractContextManager[Any]]
    _columns = ALERT_COLUMNS

    def _rows(self, query: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        raise NotImplementedError

    def _alert(self, row: Sequence[Any]) -> Alert:
        return alert_from_row(row)

    def _one(self, where: str, params: Sequence[Any]) -> Alert | None:
        rows = self._rows(f"SELECT {self._columns} FROM alerts {where}", params)
        return self._alert(rows[0]) if rows else None

    def get(self, alert_id: int) -> Alert | None:
        return self._one("WHERE id = ?", (alert_id,))

    def find_active(self, fingerprint: Fingerprint) -> Alert | None:
        return self._one("WHERE fingerprint = ? AND state != 'closed'", (fingerprint.key(),))

    def last_seq(self, alert_id: int) -> int:
        rows = self._rows("SELECT last_seq FROM alerts WHERE id = ?", (alert_id,))
        return int(rows[0][0]) if rows else 0

    def events(self, alert_id: int) -> list[AlertEvent]:
        rows = self._rows(
            "SELECT alert_id, seq, type, at_ms, actor, note, state, colour, value "
            "FROM alert_events WHERE alert_id = ? ORDER BY seq",
            (alert_id,),
        )
        return [
            AlertEvent(
                int(r[0]), r[1], EventType(r[2]), int(r[3]), r[4], r[5], State(r[6]), r[7], r[8]
            )
            for r in rows
        ]

    def _write(
        self, db: Any, alert: Alert, events: Sequence[AlertEvent], outbox: Sequence[OutboxEntry]
    ) -> None:
        raise NotImplementedError

    def save(
        self, alert: Alert, events: Sequence[AlertEvent], outbox: Sequence[OutboxEntry] = ()
    ) -> None:
        self.save_all([(alert, events, outbox)])

    def save_all(self, writes: Sequence[Write]) -> None:
        """Several alerts' changes in one transaction."""
        with self._transaction() as db:
            for write in writes:
                self._write(db, *write)

    def _decide_new(
        self, db: Any, alert: Alert, events: Sequence[AlertEvent], decide: Decide | None
    ) -> list[AlertEvent]:
        """Within the transaction that inserted ``alert`` (it has its id now): its first
        events, and what ``decide`` makes of them (its outbox entries, its incident
        leader's change)."""
        stamped = [dataclasses.replace(e, alert_id=alert.id) for e in events]
        writes = decide(alert, stamped) if decide is not None else [(alert, stamped, ())]
        for write in writes:
            self._write(db, *write)
        return stamped


def event_rows(alert: Alert, events: Iterable[AlertEvent]) -> list[tuple[Any, ...]]:
    return [
        (alert.id, e.seq, e.type.value, e.at_ms, e.actor, e.note, e.state.value, e.colour, e.value)
        for e in events
    ]


# -- the outbox ----------------------------------------------------------------------------

OUTBOX_COLUMNS = "receiver, event_key, alert_id, seq, payload, created_ms"
OUTBOX_ROW = "id, receiver, event_key, alert_id, seq, payload, attempts, created_ms"
# Due to ``receiver`` now, and per alert only the oldest pending, so that one alert's
# events reach the receiver in order (parameters: receiver, now_ms).
DUE = (
    "o.status = 'pending' AND o.receiver = ? AND o.next_attempt_ms <= ? "
    "AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.status = 'pending' "
    "AND p.receiver = o.receiver AND p.alert_id = o.alert_id AND p.seq < o.seq)"
)


class OutboxStatements:
    """The outbox's operations that both stores run alike; a store gives its dialect and
    how it runs a statement (``_change``: in a transaction, the rows it touched) and a
    query (``_rows``)."""

    dialect: Dialect

    def _change(self, query: str, params: Sequence[Any]) -> int:
        raise NotImplementedError

    def _rows(self, query: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        raise NotImplementedError

    def delivered(self, row_id: int, now_ms: int) -> None:
        self._change(
            "UPDATE outbox SET status = 'delivered', delivered_ms = ?"
            f"{self.dialect.release} WHERE id = ?",
            (now_ms, row_id),
        )

    def retry_later(self, row_id: int, next_attempt_ms: int, error: str) -> None:
        # Released: whichever instance looks first when it is due sends it.
        self._change(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_ms = ?, last_error = ?"
            f"{self.dialect.release} WHERE id = ?",
            (next_attempt_ms, error[:500], row_id),
        )

    def dead(self, row_id: int, error: str) -> None:
        self._change(
            "UPDATE outbox SET status = 'dead', attempts = attempts + 1, last_error = ?"
            f"{self.dialect.release} WHERE id = ?",
            (error[:500], row_id),
        )

    def retry_now(self, receiver: str) -> int:
        """Make every pending delivery to ``receiver`` due now; how many were waiting."""
        return self._change(
            "UPDATE outbox SET next_attempt_ms = 0 "
            "WHERE status = 'pending' AND receiver = ? AND next_attempt_ms > 0",
            (receiver,),
        )

    def backlogs(self) -> dict[str, Backlog]:
        """Per receiver with anything pending or dead: its backlog (index scans only for
        the counts; the pending rows are read for their age)."""
        rows = self._rows(
            "SELECT receiver, status, count(*), min(created_ms) FROM outbox "
            "WHERE status IN ('pending', 'dead') GROUP BY receiver, status"
        )
        found: dict[str, Backlog] = {}
        for receiver, status, count, oldest in rows:
            was = found.get(receiver, Backlog())
            if status == "pending":
                found[receiver] = dataclasses.replace(
                    was, pending=int(count), oldest_pending_ms=int(oldest)
                )
            else:
                found[receiver] = dataclasses.replace(was, dead=int(count))
        return found

    def counts(self) -> dict[str, int]:
        rows = self._rows("SELECT status, count(*) FROM outbox GROUP BY status")
        return {str(status): int(n) for status, n in rows}


def outbox_from_row(r: Sequence[Any]) -> OutboxRow:
    """An outbox row from ``OUTBOX_ROW``."""
    return OutboxRow(int(r[0]), r[1], r[2], int(r[3]), r[4], bytes(r[5]), r[6], int(r[7]))


# -- silences ------------------------------------------------------------------------------

INSERT_SILENCE = (
    "INSERT INTO silences (unit, device, starts_ms, ends_ms, actor, reason) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
CURRENT_SILENCES = (
    "SELECT id, unit, device, starts_ms, ends_ms, actor, reason FROM silences "
    "WHERE ends_ms > ? ORDER BY id"
)


def silence_values(silence: Silence) -> tuple[Any, ...]:
    return (
        silence.unit,
        silence.device,
        silence.starts_ms,
        silence.ends_ms,
        silence.actor,
        silence.reason,
    )


def silence_from_row(r: Sequence[Any]) -> Silence:
    return Silence(int(r[0]), r[1], r[2], int(r[3]), int(r[4]), r[5], r[6])
