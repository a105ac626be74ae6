"""The alert store in PostgreSQL, shared by several collector instances.

The same repositories and invariants as the SQLite store (collector/alerts/store.py): a
change's alert row, events and outbox entries are one transaction; a partial unique index
keeps one active alert per fingerprint. What sharing adds:

- each outbox row is delivered by one instance: ``due`` claims the rows it returns
  (``FOR UPDATE SKIP LOCKED``, ``claimed_by`` until ``claim_until_ms``), so two
  instances never send the same event at once; a claim whose holder died expires after
  the lease and another instance takes the row;
- each sweep of the alert clock (verification, escalation) runs on one instance at a
  time: ``leads`` holds a named lease, renewed at each sweep, taken over once it expires;
- a change decided on a copy of an alert that another instance has changed since is
  refused (``AlertConflictError``: the row's ``last_seq`` is not the one the change
  follows), so no change is lost to another; the alert book reads again and decides again.

Leases are measured on the database's clock, so instances with skewed clocks agree.
There is no cache: every read goes to the database, so what another instance (or the
HTTP API of another instance) wrote is seen at once.

The connection is made again on the next use after PostgreSQL went away; meanwhile the
store's errors (``UNAVAILABLE``) make detections wait and deliveries stay pending.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import errors as pgerrors

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
from collector.alerts.pgdatabase import DB_NOW_MS, UNAVAILABLE, PgDatabase, Row, instance_name
from collector.alerts.repositories import Decide, Write
from collector.errors import AlertConflictError

__all__ = ["UNAVAILABLE", "PgAlertStore"]

# Each alert read carries, out of sight of its fields, the event its row stood at: a
# change decided on it is written only if the row still stands there.
_READ_AT_SEQ = "_pg_read_at_seq"


class _Repository:
    def __init__(self, database: PgDatabase) -> None:
        self._database = database
        self._transaction = database.transaction
        self._reading = database.reading


class PgAlerts(_Repository):
    """Alerts and their events, with the outbox entries of each change."""

    def create(
        self, alert: Alert, events: Sequence[AlertEvent], decide: Decide | None = None
    ) -> tuple[Alert, list[AlertEvent]]:
        """Insert a new alert with its first events, and what ``decide`` makes of them
        once the alert has its id, all in one transaction. Another instance having
        opened an alert of this fingerprint first is a conflict."""
        try:
            with self._transaction() as db:
                found = db.execute(
                    "INSERT INTO alerts (fingerprint, device, quantity, detector, state, colour,"
                    " family, unit, hierarchy, value, started_at_ms, updated_at_ms,"
                    " condition_active, condition_changed_at_ms, acknowledged, extra) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                    "RETURNING id",
                    (
                        alert.fingerprint.key(),
                        alert.fingerprint.device,
                        alert.fingerprint.quantity,
                        alert.fingerprint.detector,
                        *self._row_values(alert),
                    ),
                ).fetchone()
                alert.id = int(found[0]) if found else 0
                stamped = [dataclasses.replace(e, alert_id=alert.id) for e in events]
                writes = decide(alert, stamped) if decide is not None else [(alert, stamped, ())]
                for write in writes:
                    self._write(db, *write)
        except pgerrors.UniqueViolation as exc:
            raise AlertConflictError(
                f"an active alert of {alert.fingerprint.key()} exists already"
            ) from exc
        return alert, stamped

    def save(
        self, alert: Alert, events: Sequence[AlertEvent], outbox: Sequence[OutboxEntry] = ()
    ) -> None:
        self.save_all([(alert, events, outbox)])

    def save_all(self, writes: Sequence[Write]) -> None:
        """Several alerts' changes in one transaction."""
        with self._transaction() as db:
            for write in writes:
                self._write(db, *write)

    def _write(
        self,
        db: psycopg.Connection[Row],
        alert: Alert,
        events: Sequence[AlertEvent],
        outbox: Sequence[OutboxEntry],
    ) -> None:
        update = (
            "UPDATE alerts SET state = %s, colour = %s, family = %s, unit = %s, "
            "hierarchy = %s, value = %s, started_at_ms = %s, updated_at_ms = %s, "
            "condition_active = %s, condition_changed_at_ms = %s, acknowledged = %s, "
            "extra = %s"
        )
        if not events:
            db.execute(update + " WHERE id = %s", (*self._row_values(alert), alert.id))
        else:
            # The change follows the event before its first, and was decided on a copy
            # read at some event: if either is not where the row stands, another instance
            # changed the alert since.
            follows = events[0].seq - 1
            read_at = vars(alert).get(_READ_AT_SEQ, follows)
            cursor = db.execute(
                update + ", last_seq = %s WHERE id = %s AND last_seq = %s",
                (*self._row_values(alert), events[-1].seq, alert.id, follows),
            )
            if cursor.rowcount != 1 or read_at != follows:
                raise AlertConflictError(f"alert {alert.id} changed since it was read")
            self._insert_events(db, alert, events)
            vars(alert)[_READ_AT_SEQ] = events[-1].seq  # the copy is the row again
        self._insert_outbox(db, outbox)

    @staticmethod
    def _insert_outbox(db: psycopg.Connection[Row], entries: Sequence[OutboxEntry]) -> None:
        if not entries:
            return
        now_ms = round(time.time() * 1000)
        with db.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO outbox (receiver, event_key, alert_id, seq, payload, created_ms) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (receiver, event_key) DO NOTHING",
                [(e.receiver, e.event_key, e.alert_id, e.seq, e.payload, now_ms) for e in entries],
            )

    @staticmethod
    def _row_values(alert: Alert) -> tuple[Any, ...]:
        return (
            alert.state.value,
            alert.colour,
            alert.family,
            alert.unit,
            json.dumps(alert.hierarchy),
            alert.value,
            alert.started_at_ms,
            alert.updated_at_ms,
            alert.condition_active,
            alert.condition_changed_at_ms,
            alert.acknowledged,
            json.dumps(bookkeeping(alert)),
        )

    @staticmethod
    def _insert_events(
        db: psycopg.Connection[Row], alert: Alert, events: Sequence[AlertEvent]
    ) -> None:
        with db.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO alert_events VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        alert.id,
                        e.seq,
                        e.type.value,
                        e.at_ms,
                        e.actor,
                        e.note,
                        e.state.value,
                        e.colour,
                        e.value,
                    )
                    for e in events
                ],
            )

    def last_seq(self, alert_id: int) -> int:
        with self._reading() as db:
            row = db.execute("SELECT last_seq FROM alerts WHERE id = %s", (alert_id,)).fetchone()
        return int(row[0]) if row else 0

    _COLUMNS = (
        "id, device, quantity, detector, state, colour, family, unit, hierarchy, value, "
        "started_at_ms, updated_at_ms, condition_active, condition_changed_at_ms, "
        "acknowledged, extra, last_seq"
    )

    @staticmethod
    def _alert(row: Row) -> Alert:
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
        vars(alert)[_READ_AT_SEQ] = int(row[16])
        return with_bookkeeping(alert, json.loads(row[15]))

    def get(self, alert_id: int) -> Alert | None:
        with self._reading() as db:
            row = db.execute(
                f"SELECT {self._COLUMNS} FROM alerts WHERE id = %s", (alert_id,)
            ).fetchone()
        return self._alert(row) if row else None

    def find_active(self, fingerprint: Fingerprint) -> Alert | None:
        with self._reading() as db:
            row = db.execute(
                f"SELECT {self._COLUMNS} FROM alerts WHERE fingerprint = %s AND state != 'closed'",
                (fingerprint.key(),),
            ).fetchone()
        return self._alert(row) if row else None

    def matching(self, *, states: Sequence[State] = (), unit: str | None = None) -> list[Alert]:
        """Alerts in any of ``states`` (all when empty), of one ``unit`` if given, by id."""
        query = f"SELECT {self._COLUMNS} FROM alerts WHERE true"
        params: list[Any] = []
        if states:
            query += " AND state = ANY(%s)"
            params.append([s.value for s in states])
        if unit is not None:
            query += " AND unit = %s"
            params.append(unit)
        with self._reading() as db:
            rows = db.execute(query + " ORDER BY id", params).fetchall()
        return [self._alert(row) for row in rows]

    def events(self, alert_id: int) -> list[AlertEvent]:
        with self._reading() as db:
            rows = db.execute(
                "SELECT alert_id, seq, type, at_ms, actor, note, state, colour, value "
                "FROM alert_events WHERE alert_id = %s ORDER BY seq",
                (alert_id,),
            ).fetchall()
        return [
            AlertEvent(
                int(r[0]), r[1], EventType(r[2]), int(r[3]), r[4], r[5], State(r[6]), r[7], r[8]
            )
            for r in rows
        ]


class PgOutbox(_Repository):
    _ROW = "id, receiver, event_key, alert_id, seq, payload, attempts, created_ms"

    def due(self, now_ms: int, receiver: str, limit: int = 100) -> list[OutboxRow]:
        """Claim and return the pending deliveries to ``receiver`` that may go now: per
        alert only the oldest, so one alert's events reach the receiver in order; rows
        another instance holds are skipped, rows this one holds are claimed again (their
        lease renewed)."""
        holder, lease_ms = self._database.holder, self._database.lease_ms
        with self._transaction() as db:
            rows = db.execute(
                f"UPDATE outbox SET claimed_by = %s, claim_until_ms = {DB_NOW_MS} + %s "
                "WHERE id IN (SELECT o.id FROM outbox o WHERE o.status = 'pending' "
                "AND o.receiver = %s AND o.next_attempt_ms <= %s "
                "AND (o.claimed_by IS NULL OR o.claimed_by = %s "
                f"OR o.claim_until_ms <= {DB_NOW_MS}) "
                "AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.status = 'pending' "
                "AND p.receiver = o.receiver AND p.alert_id = o.alert_id AND p.seq < o.seq) "
                "ORDER BY o.id LIMIT %s FOR UPDATE OF o SKIP LOCKED) "
                f"RETURNING {self._ROW}",
                (holder, lease_ms, receiver, now_ms, holder, limit),
            ).fetchall()
        found = [
            OutboxRow(int(r[0]), r[1], r[2], int(r[3]), r[4], bytes(r[5]), r[6], int(r[7]))
            for r in rows
        ]
        return sorted(found, key=lambda row: row.id)

    def dead_unless_receiver(self, receivers: Sequence[str], error: str) -> int:
        """Move pending deliveries to any receiver not in ``receivers`` to the dead-letter
        list; how many."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE outbox SET status = 'dead', last_error = %s "
                "WHERE status = 'pending' AND NOT (receiver = ANY(%s))",
                (error[:500], list(receivers)),
            )
        return cursor.rowcount

    def delivered(self, row_id: int, now_ms: int) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE outbox SET status = 'delivered', delivered_ms = %s, claimed_by = NULL "
                "WHERE id = %s",
                (now_ms, row_id),
            )

    def retry_later(self, row_id: int, next_attempt_ms: int, error: str) -> None:
        # Released: whichever instance looks first when it is due sends it.
        with self._transaction() as db:
            db.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_ms = %s, "
                "last_error = %s, claimed_by = NULL, claim_until_ms = 0 WHERE id = %s",
                (next_attempt_ms, error[:500], row_id),
            )

    def dead(self, row_id: int, error: str) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE outbox SET status = 'dead', attempts = attempts + 1, "
                "last_error = %s, claimed_by = NULL WHERE id = %s",
                (error[:500], row_id),
            )

    def retry_now(self, receiver: str) -> int:
        """Make every pending delivery to ``receiver`` due now; how many were waiting."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE outbox SET next_attempt_ms = 0 "
                "WHERE status = 'pending' AND receiver = %s AND next_attempt_ms > 0",
                (receiver,),
            )
        return cursor.rowcount

    def backlogs(self) -> dict[str, Backlog]:
        """Per receiver with anything pending or dead: its backlog."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT receiver, status, count(*), min(created_ms) FROM outbox "
                "WHERE status IN ('pending', 'dead') GROUP BY receiver, status"
            ).fetchall()
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
        with self._reading() as db:
            rows = db.execute("SELECT status, count(*) FROM outbox GROUP BY status").fetchall()
        return {str(status): int(n) for status, n in rows}


class PgSilences(_Repository):
    def add(self, silence: Silence) -> Silence:
        with self._transaction() as db:
            found = db.execute(
                "INSERT INTO silences (unit, device, starts_ms, ends_ms, actor, reason) "
                "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                (
                    silence.unit,
                    silence.device,
                    silence.starts_ms,
                    silence.ends_ms,
                    silence.actor,
                    silence.reason,
                ),
            ).fetchone()
        return dataclasses.replace(silence, id=int(found[0]) if found else 0)

    def current(self, now_ms: int) -> list[Silence]:
        """Silences not yet over (current and future)."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT id, unit, device, starts_ms, ends_ms, actor, reason FROM silences "
                "WHERE ends_ms > %s ORDER BY id",
                (now_ms,),
            ).fetchall()
        return [Silence(int(r[0]), r[1], r[2], int(r[3]), int(r[4]), r[5], r[6]) for r in rows]


class PgAlertStore:
    """The three repositories on one PostgreSQL database, shared by every instance whose
    ``alerts.store`` names it."""

    shared = True  # other instances may change what it holds at any time

    def __init__(self, url: str, *, holder: str | None = None, lease_s: float = 60.0) -> None:
        self.database = PgDatabase(url, holder=holder or instance_name(), lease_s=lease_s)
        self.alerts = PgAlerts(self.database)
        self.outbox = PgOutbox(self.database)
        self.silences = PgSilences(self.database)

    def leads(self, task: str) -> bool:
        """Whether this instance runs ``task`` now: it holds the task's lease (renewed
        by this call), or takes it over from a holder that let it expire."""
        database = self.database
        with database.transaction() as db:
            row = db.execute(
                f"INSERT INTO leases (name, holder, until_ms) VALUES (%s, %s, {DB_NOW_MS} + %s) "
                "ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, "
                "until_ms = EXCLUDED.until_ms "
                f"WHERE leases.holder = EXCLUDED.holder OR leases.until_ms <= {DB_NOW_MS} "
                "RETURNING holder",
                (task, database.holder, database.lease_ms),
            ).fetchone()
        return row is not None

    def close(self) -> None:
        self.database.close()
