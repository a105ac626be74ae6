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
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from collector.alerts import sql
from collector.alerts.model import Alert, AlertEvent, Silence, State
from collector.alerts.outbox import OutboxEntry, OutboxRow
from collector.alerts.repositories import Decide
from collector.alerts.schema import prepare
from collector.alerts.sql import SQLITE
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
    dialect = SQLITE

    def __init__(self, database: SqliteDatabase) -> None:
        self._db = database.db
        self._lock = database.lock
        self._transaction = database.transaction

    def _change(self, query: str, params: Sequence[Any]) -> int:
        with self._transaction() as db:
            return db.execute(query, params).rowcount

    def _rows(self, query: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        with self._lock:
            return list(self._db.execute(query, params).fetchall())


class SqliteAlerts(_Repository, sql.AlertStatements):
    """Alerts and their events, with the outbox entries of each change."""

    def create(
        self, alert: Alert, events: Sequence[AlertEvent], decide: Decide | None = None
    ) -> tuple[Alert, list[AlertEvent]]:
        """Insert a new alert with its first events, and what ``decide`` makes of them
        once the alert has its id (its outbox entries, its incident leader's change), all
        in one transaction."""
        with self._transaction() as db:
            cursor = db.execute(
                sql.INSERT_ALERT, (*sql.alert_key_values(alert), *sql.alert_values(alert, SQLITE))
            )
            alert.id = int(cursor.lastrowid or 0)
            stamped = self._decide_new(db, alert, events, decide)
        return alert, stamped

    def _write(
        self,
        db: sqlite3.Connection,
        alert: Alert,
        events: Sequence[AlertEvent],
        outbox: Sequence[OutboxEntry],
    ) -> None:
        db.execute(sql.UPDATE_ALERT + " WHERE id = ?", (*sql.alert_values(alert, SQLITE), alert.id))
        self._insert_events(db, alert, events)
        now_ms = round(time.time() * 1000)
        db.executemany(
            f"INSERT OR IGNORE INTO outbox ({sql.OUTBOX_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
            [(e.receiver, e.event_key, e.alert_id, e.seq, e.payload, now_ms) for e in outbox],
        )

    @staticmethod
    def _insert_events(db: sqlite3.Connection, alert: Alert, events: Sequence[AlertEvent]) -> None:
        if events:
            db.executemany(sql.INSERT_EVENTS, sql.event_rows(alert, events))
            db.execute("UPDATE alerts SET last_seq = ? WHERE id = ?", (events[-1].seq, alert.id))

    def matching(self, *, states: Sequence[State] = (), unit: str | None = None) -> list[Alert]:
        """Alerts in any of ``states`` (all when empty), of one ``unit`` if given, by id."""
        query = f"SELECT {self._columns} FROM alerts WHERE 1"
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


class SqliteOutbox(_Repository, sql.OutboxStatements):
    def due(self, now_ms: int, receiver: str, limit: int = 100) -> list[OutboxRow]:
        """Pending deliveries to ``receiver`` that may go now: per alert, only the oldest,
        so one alert's events reach the receiver in order."""
        columns = ", ".join(f"o.{column}" for column in sql.OUTBOX_ROW.split(", "))
        with self._lock:
            rows = self._db.execute(
                f"SELECT {columns} FROM outbox o WHERE {sql.DUE} ORDER BY o.id LIMIT ?",
                (receiver, now_ms, limit),
            ).fetchall()
        return [sql.outbox_from_row(row) for row in rows]

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


class SqliteSilences(_Repository):
    def add(self, silence: Silence) -> Silence:
        with self._transaction() as db:
            cursor = db.execute(sql.INSERT_SILENCE, sql.silence_values(silence))
        return dataclasses.replace(silence, id=int(cursor.lastrowid or 0))

    def current(self, now_ms: int) -> list[Silence]:
        """Silences not yet over (current and future)."""
        return [sql.silence_from_row(r) for r in self._rows(sql.CURRENT_SILENCES, (now_ms,))]


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
