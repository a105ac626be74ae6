"""Durable alert storage in SQLite: the three repositories on one database.

Every change is one transaction that writes the alert's new row and its new events
together, so a crash can never leave an event without its alert or the other way round.
SQLite runs in WAL mode with ``synchronous=FULL``: a committed change survives a power
cut. A partial unique index enforces one active alert per fingerprint in the database
itself. The interfaces are in collector/alerts/repositories.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
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
from collector.alerts.schema import prepare
from collector.errors import AlertStoreError, DamagedAlertStoreError

# What a failing SQLite store raises (full or unwritable disk, locked or lost file): the
# write is retried, not the service stopped.
UNAVAILABLE: tuple[type[Exception], ...] = (sqlite3.Error, OSError)


def integrity_problems(db: sqlite3.Connection, *, thorough: bool = False) -> list[str]:
    """What SQLite finds wrong with a database; empty when it is sound.

    ``quick_check`` reads every page (seconds for a gigabyte); ``integrity_check`` also
    checks that every index matches its table. A file that is not a database at all
    fails the first read, which counts as a problem too.
    """
    pragma = "integrity_check" if thorough else "quick_check"
    try:
        found = [str(row[0]) for row in db.execute(f"PRAGMA {pragma}").fetchall()]
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    return [] if found == ["ok"] else found


class SqliteDatabase:
    """One SQLite connection shared by the repositories, and its transactions."""

    def __init__(self, path: Path | str) -> None:
        """Open (or create) the store; a damaged file raises DamagedAlertStoreError.

        Running on a damaged file would fail at some later write, in the middle of an
        alert's life; refusing at start gives the operator a clear choice instead
        (``smartunit alerts-db recover``)."""
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.lock = threading.Lock()  # the collector loop and the HTTP API share the store
        try:
            self._open(Path(path))
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise DamagedAlertStoreError(Path(path), str(exc)) from None
        except AlertStoreError:
            self.db.close()
            raise

    def _open(self, path: Path) -> None:
        problems = integrity_problems(self.db)
        if problems:
            more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
            raise DamagedAlertStoreError(path, problems[0] + more)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA foreign_keys=ON")
        prepare(self.db, path)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            if self.db.in_transaction:  # a failed write whose rollback failed too
                self._rollback()
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
                self.db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        # An unwritable disk may fail the rollback as well (SQLite then rolls back on
        # its own) or leave the transaction open: the next write tries again.
        with contextlib.suppress(sqlite3.Error):
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")

    def close(self) -> None:
        with self.lock:
            self.db.close()


class _Repository:
    def __init__(self, database: SqliteDatabase) -> None:
        self._db = database.db
        self._lock = database.lock
        self._transaction = database.transaction


class SqliteAlerts(_Repository):
    """Alerts and their events, with the outbox entries of each change."""

    def create(
        self, alert: Alert, events: Sequence[AlertEvent], decide: Decide | None = None
    ) -> tuple[Alert, list[AlertEvent]]:
        """Insert a new alert with its first events, and what ``decide`` makes of them
        once the alert has its id (its outbox entries, its incident leader's change), all
        in one transaction."""
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO alerts (fingerprint, device, quantity, detector, state, colour, "
                "family, unit, hierarchy, value, started_at_ms, updated_at_ms, condition_active,"
                " condition_changed_at_ms, acknowledged, extra) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    alert.fingerprint.key(),
                    alert.fingerprint.device,
                    alert.fingerprint.quantity,
                    alert.fingerprint.detector,
                    *self._row_values(alert),
                ),
            )
            alert.id = int(cursor.lastrowid or 0)
            stamped = [dataclasses.replace(e, alert_id=alert.id) for e in events]
            writes = decide(alert, stamped) if decide is not None else [(alert, stamped, ())]
            for write in writes:
                self._write(db, *write)
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
        db: sqlite3.Connection,
        alert: Alert,
        events: Sequence[AlertEvent],
        outbox: Sequence[OutboxEntry],
    ) -> None:
        db.execute(
            "UPDATE alerts SET state = ?, colour = ?, family = ?, unit = ?, hierarchy = ?, "
            "value = ?, started_at_ms = ?, updated_at_ms = ?, condition_active = ?, "
            "condition_changed_at_ms = ?, acknowledged = ?, extra = ? WHERE id = ?",
            (*self._row_values(alert), alert.id),
        )
        self._insert_events(db, alert, events)
        self._insert_outbox(db, outbox)

    @staticmethod
    def _insert_outbox(db: sqlite3.Connection, entries: Sequence[OutboxEntry]) -> None:
        now_ms = round(time.time() * 1000)
        db.executemany(
            "INSERT OR IGNORE INTO outbox (receiver, event_key, alert_id, seq, payload, "
            "created_ms) VALUES (?, ?, ?, ?, ?, ?)",
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
            int(alert.condition_active),
            alert.condition_changed_at_ms,
            int(alert.acknowledged),
            json.dumps(bookkeeping(alert)),
        )

    @staticmethod
    def _insert_events(db: sqlite3.Connection, alert: Alert, events: Sequence[AlertEvent]) -> None:
        if not events:
            return
        db.executemany(
            "INSERT INTO alert_events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        db.execute("UPDATE alerts SET last_seq = ? WHERE id = ?", (events[-1].seq, alert.id))

    def last_seq(self, alert_id: int) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT last_seq FROM alerts WHERE id = ?", (alert_id,)
            ).fetchone()
        return int(row[0]) if row else 0

    _COLUMNS = (
        "id, device, quantity, detector, state, colour, family, unit, hierarchy, value, "
        "started_at_ms, updated_at_ms, condition_active, condition_changed_at_ms, "
        "acknowledged, extra"
    )

    @staticmethod
    def _alert(row: Sequence[Any]) -> Alert:
        alert = Alert(
            id=row[0],
            fingerprint=Fingerprint(row[1], row[2], row[3]),
            state=State(row[4]),
            colour=row[5],
            family=row[6],
            unit=row[7],
            hierarchy=json.loads(row[8]),
            value=row[9],
            started_at_ms=row[10],
            updated_at_ms=row[11],
            condition_active=bool(row[12]),
            condition_changed_at_ms=row[13],
            acknowledged=bool(row[14]),
        )
        return with_bookkeeping(alert, json.loads(row[15]))

    def get(self, alert_id: int) -> Alert | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {self._COLUMNS} FROM alerts WHERE id = ?",
                (alert_id,),
            ).fetchone()
        return self._alert(row) if row else None

    def find_active(self, fingerprint: Fingerprint) -> Alert | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {self._COLUMNS} FROM alerts WHERE fingerprint = ? AND state != 'closed'",
                (fingerprint.key(),),
            ).fetchone()
        return self._alert(row) if row else None

    def matching(self, *, states: Sequence[State] = (), unit: str | None = None) -> list[Alert]:
        """Alerts in any of ``states`` (all when empty), of one ``unit`` if given, by id."""
        query = f"SELECT {self._COLUMNS} FROM alerts WHERE 1"
        params: list[str] = []
        if states:
            query += f" AND state IN ({', '.join('?' for _ in states)})"
            params += [s.value for s in states]
        if unit is not None:
            # Each alert event looks up its unit's alerts: by index, not by reading them all.
            query += " AND unit = ?"
            params.append(unit)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY id", params).fetchall()
        return [self._alert(row) for row in rows]

    def events(self, alert_id: int) -> list[AlertEvent]:
        with self._lock:
            rows = self._db.execute(
                "SELECT alert_id, seq, type, at_ms, actor, note, state, colour, value "
                "FROM alert_events WHERE alert_id = ? ORDER BY seq",
                (alert_id,),
            ).fetchall()
        return [
            AlertEvent(r[0], r[1], EventType(r[2]), r[3], r[4], r[5], State(r[6]), r[7], r[8])
            for r in rows
        ]


class SqliteOutbox(_Repository):
    def due(self, now_ms: int, receiver: str, limit: int = 100) -> list[OutboxRow]:
        """Pending deliveries to ``receiver`` that may go now: per alert, only the oldest,
        so one alert's events reach the receiver in order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT o.id, o.receiver, o.event_key, o.alert_id, o.seq, o.payload, o.attempts, "
                "o.created_ms FROM outbox o WHERE o.status = 'pending' AND o.receiver = ? "
                "AND o.next_attempt_ms <= ? "
                "AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.status = 'pending' "
                "AND p.receiver = o.receiver AND p.alert_id = o.alert_id AND p.seq < o.seq) "
                "ORDER BY o.id LIMIT ?",
                (receiver, now_ms, limit),
            ).fetchall()
        return [OutboxRow(*row) for row in rows]

    def dead_unless_receiver(self, receivers: Sequence[str], error: str) -> int:
        """Move pending deliveries to any receiver not in ``receivers`` to the dead-letter
        list; how many."""
        marks = ", ".join("?" for _ in receivers)
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE outbox SET status = 'dead', last_error = ? "
                f"WHERE status = 'pending' AND receiver NOT IN ({marks})",
                (error[:500], *receivers),
            )
        return cursor.rowcount

    def delivered(self, row_id: int, now_ms: int) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE outbox SET status = 'delivered', delivered_ms = ? WHERE id = ?",
                (now_ms, row_id),
            )

    def retry_later(self, row_id: int, next_attempt_ms: int, error: str) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_ms = ?, last_error = ? "
                "WHERE id = ?",
                (next_attempt_ms, error[:500], row_id),
            )

    def dead(self, row_id: int, error: str) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE outbox SET status = 'dead', attempts = attempts + 1, "
                "last_error = ? WHERE id = ?",
                (error[:500], row_id),
            )

    def retry_now(self, receiver: str) -> int:
        """Make every pending delivery to ``receiver`` due now; how many were waiting."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE outbox SET next_attempt_ms = 0 "
                "WHERE status = 'pending' AND receiver = ? AND next_attempt_ms > 0",
                (receiver,),
            )
        return cursor.rowcount

    def backlogs(self) -> dict[str, Backlog]:
        """Per receiver with anything pending or dead: its backlog (index scans only for
        the counts; the pending rows are read for their age)."""
        with self._lock:
            rows = self._db.execute(
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
        with self._lock:
            rows = self._db.execute("SELECT status, count(*) FROM outbox GROUP BY status")
            return {status: int(n) for status, n in rows.fetchall()}


class SqliteSilences(_Repository):
    def add(self, silence: Silence) -> Silence:
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO silences (unit, device, starts_ms, ends_ms, actor, reason) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    silence.unit,
                    silence.device,
                    silence.starts_ms,
                    silence.ends_ms,
                    silence.actor,
                    silence.reason,
                ),
            )
        return dataclasses.replace(silence, id=int(cursor.lastrowid or 0))

    def current(self, now_ms: int) -> list[Silence]:
        """Silences not yet over (current and future)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, unit, device, starts_ms, ends_ms, actor, reason FROM silences "
                "WHERE ends_ms > ? ORDER BY id",
                (now_ms,),
            ).fetchall()
        return [Silence(*row) for row in rows]


class SqliteAlertStore:
    """The three repositories on one SQLite file: one connection, one lock, so a change
    and its outbox entries are one transaction."""

    shared = False  # one collector owns the file

    def __init__(self, path: Path | str) -> None:
        self.database = SqliteDatabase(path)
        self.alerts = SqliteAlerts(self.database)
        self.outbox = SqliteOutbox(self.database)
        self.silences = SqliteSilences(self.database)

    def leads(self, task: str) -> bool:
        return True  # the only instance on the file runs every task

    def close(self) -> None:
        self.database.close()
