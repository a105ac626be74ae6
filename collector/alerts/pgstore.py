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
import time
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import errors as pgerrors

from collector.alerts import sql
from collector.alerts.model import Alert, AlertEvent, Silence, State
from collector.alerts.outbox import OutboxEntry, OutboxRow
from collector.alerts.pgdatabase import DB_NOW_MS, UNAVAILABLE, PgDatabase, Row, instance_name
from collector.alerts.repositories import Decide
from collector.alerts.sql import POSTGRES
from collector.errors import AlertConflictError

__all__ = ["UNAVAILABLE", "PgAlertStore"]

# Each alert read carries, out of sight of its fields, the event its row stood at: a
# change decided on it is written only if the row still stands there.
_READ_AT_SEQ = "_pg_read_at_seq"


class _Repository:
    dialect = POSTGRES

    def __init__(self, database: PgDatabase) -> None:
        self._database = database
        self._transaction = database.transaction
        self._reading = database.reading

    def _change(self, query: str, params: Sequence[Any]) -> int:
        with self._transaction() as db:
            return db.execute(POSTGRES.sql(query), params).rowcount

    def _rows(self, query: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        with self._reading() as db:
            return list(db.execute(POSTGRES.sql(query), params).fetchall())


class PgAlerts(_Repository, sql.AlertStatements):
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
                    POSTGRES.sql(sql.INSERT_ALERT) + POSTGRES.returning_id,
                    (*sql.alert_key_values(alert), *sql.alert_values(alert, POSTGRES)),
                ).fetchone()
                alert.id = int(found[0]) if found else 0
                stamped = self._decide_new(db, alert, events, decide)
        except pgerrors.UniqueViolation as exc:
            raise AlertConflictError(
                f"an active alert of {alert.fingerprint.key()} exists already"
            ) from exc
        return alert, stamped

    def _write(
        self,
        db: psycopg.Connection[Row],
        alert: Alert,
        events: Sequence[AlertEvent],
        outbox: Sequence[OutboxEntry],
    ) -> None:
        update = POSTGRES.sql(sql.UPDATE_ALERT)
        values = sql.alert_values(alert, POSTGRES)
        if not events:
            db.execute(update + " WHERE id = %s", (*values, alert.id))
        else:
            # The change follows the event before its first, and was decided on a copy
            # read at some event: if either is not where the row stands, another instance
            # changed the alert since.
            follows = events[0].seq - 1
            read_at = vars(alert).get(_READ_AT_SEQ, follows)
            cursor = db.execute(
                update + ", last_seq = %s WHERE id = %s AND last_seq = %s",
                (*values, events[-1].seq, alert.id, follows),
            )
            if cursor.rowcount != 1 or read_at != follows:
                raise AlertConflictError(f"alert {alert.id} changed since it was read")
            with db.cursor() as cursor:
                cursor.executemany(POSTGRES.sql(sql.INSERT_EVENTS), sql.event_rows(alert, events))
            vars(alert)[_READ_AT_SEQ] = events[-1].seq  # the copy is the row again
        self._insert_outbox(db, outbox)

    @staticmethod
    def _insert_outbox(db: psycopg.Connection[Row], entries: Sequence[OutboxEntry]) -> None:
        if not entries:
            return
        now_ms = round(time.time() * 1000)
        with db.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO outbox ({sql.OUTBOX_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (receiver, event_key) DO NOTHING",
                [(e.receiver, e.event_key, e.alert_id, e.seq, e.payload, now_ms) for e in entries],
            )

    # and the event the row stood at when read, kept with the alert (_READ_AT_SEQ)
    _columns = sql.ALERT_COLUMNS + ", last_seq"

    def _alert(self, row: Sequence[Any]) -> Alert:
        alert = sql.alert_from_row(row)
        vars(alert)[_READ_AT_SEQ] = int(row[16])
        return alert

    def matching(self, *, states: Sequence[State] = (), unit: str | None = None) -> list[Alert]:
        """Alerts in any of ``states`` (all when empty), of one ``unit`` if given, by id."""
        query = f"SELECT {self._columns} FROM alerts WHERE true"
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


class PgOutbox(_Repository, sql.OutboxStatements):
    def due(self, now_ms: int, receiver: str, limit: int = 100) -> list[OutboxRow]:
        """Claim and return the pending deliveries to ``receiver`` that may go now: per
        alert only the oldest, so one alert's events reach the receiver in order; rows
        another instance holds are skipped, rows this one holds are claimed again (their
        lease renewed)."""
        holder, lease_ms = self._database.holder, self._database.lease_ms
        with self._transaction() as db:
            rows = db.execute(
                f"UPDATE outbox SET claimed_by = %s, claim_until_ms = {DB_NOW_MS} + %s "
                f"WHERE id IN (SELECT o.id FROM outbox o WHERE {POSTGRES.sql(sql.DUE)} "
                "AND (o.claimed_by IS NULL OR o.claimed_by = %s "
                f"OR o.claim_until_ms <= {DB_NOW_MS}) "
                "ORDER BY o.id LIMIT %s FOR UPDATE OF o SKIP LOCKED) "
                f"RETURNING {sql.OUTBOX_ROW}",
                (holder, lease_ms, receiver, now_ms, holder, limit),
            ).fetchall()
        return sorted(map(sql.outbox_from_row, rows), key=lambda row: row.id)

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


class PgSilences(_Repository):
    def add(self, silence: Silence) -> Silence:
        with self._transaction() as db:
            found = db.execute(
                POSTGRES.sql(sql.INSERT_SILENCE) + POSTGRES.returning_id,
                sql.silence_values(silence),
            ).fetchone()
        return dataclasses.replace(silence, id=int(found[0]) if found else 0)

    def current(self, now_ms: int) -> list[Silence]:
        """Silences not yet over (current and future)."""
        return [sql.silence_from_row(r) for r in self._rows(sql.CURRENT_SILENCES, (now_ms,))]


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
