"""The alert database's schema, its version, and the migrations from each version before.

A file of an older version is upgraded when it is opened, all steps in one transaction;
a file of a newer version than this code knows is refused (it may hold what this code
would not keep).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

from collector.errors import AlertStoreError

SCHEMA_VERSION = 2

# The tables, in each database's types: {serial} a row id given on insert, {id} a
# reference to one, {ms} a time in milliseconds, {real} a number, {flag} a boolean,
# {blob} bytes; {claims} the outbox's extra columns and {tables} the extra tables.
TABLES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS alerts (
    id {serial},
    fingerprint TEXT NOT NULL,
    device TEXT NOT NULL,
    quantity TEXT NOT NULL,
    detector TEXT NOT NULL,
    state TEXT NOT NULL,
    colour TEXT NOT NULL,
    family TEXT NOT NULL,
    unit TEXT NOT NULL,
    hierarchy TEXT NOT NULL,
    value {real},
    started_at_ms {ms} NOT NULL,
    updated_at_ms {ms} NOT NULL,
    condition_active {flag} NOT NULL,
    condition_changed_at_ms {ms} NOT NULL,
    acknowledged {flag} NOT NULL,
    extra TEXT NOT NULL,
    last_seq INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS one_active_alert_per_fingerprint
    ON alerts(fingerprint) WHERE state != 'closed';
CREATE INDEX IF NOT EXISTS alerts_by_state ON alerts(state);
CREATE INDEX IF NOT EXISTS alerts_by_unit ON alerts(unit, state);
CREATE TABLE IF NOT EXISTS alert_events (
    alert_id {id} NOT NULL REFERENCES alerts(id),
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    at_ms {ms} NOT NULL,
    actor TEXT NOT NULL,
    note TEXT NOT NULL,
    state TEXT NOT NULL,
    colour TEXT NOT NULL,
    value {real},
    PRIMARY KEY (alert_id, seq)
);
CREATE TABLE IF NOT EXISTS outbox (
    id {serial},
    receiver TEXT NOT NULL,
    event_key TEXT NOT NULL,
    alert_id {id} NOT NULL,
    seq INTEGER NOT NULL,
    payload {blob} NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms {ms} NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    delivered_ms {ms},
    created_ms {ms} NOT NULL DEFAULT 0,
{claims}    UNIQUE (receiver, event_key)
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(status, receiver, alert_id, seq);
CREATE TABLE IF NOT EXISTS silences (
    id {serial},
    unit TEXT,
    device TEXT,
    starts_ms {ms} NOT NULL,
    ends_ms {ms} NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL
);
{tables}"""

SCHEMA = TABLES.format(
    serial="INTEGER PRIMARY KEY AUTOINCREMENT",
    id="INTEGER",
    ms="INTEGER",
    real="REAL",
    flag="INTEGER",
    blob="BLOB",
    claims="",
    tables="",
)

# The statements that take a file from each version to the next.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    # Each outbox row's creation time: a receiver's backlog age, and when its events are
    # given up. Rows of version 1 get theirs from ``_date_unknown_ages``.
    1: ("ALTER TABLE outbox ADD COLUMN created_ms INTEGER NOT NULL DEFAULT 0",),
}


def prepare(db: sqlite3.Connection, path: Path) -> None:
    """Create, check or upgrade the schema of a database just opened (autocommit mode)."""
    db.executescript(SCHEMA)
    found = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    if found is None:
        db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
    elif int(found[0]) != SCHEMA_VERSION:
        version = int(found[0])
        if version not in MIGRATIONS:
            raise AlertStoreError(
                f"alert database {path} has schema {found[0]}, this version reads {SCHEMA_VERSION}",
                path=path,
            )
        statements = [s for v in range(version, SCHEMA_VERSION) for s in MIGRATIONS[v]]
        _in_one_transaction(db, statements)
    _date_unknown_ages(db)


def _in_one_transaction(db: sqlite3.Connection, statements: list[str]) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        for statement in statements:
            db.execute(statement)
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION),))
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise


def _date_unknown_ages(db: sqlite3.Connection) -> None:
    """Pending rows without a creation time (written by version 1, or salvaged from its
    file by ``alerts-db recover``) count from now: an unknown age must not give them up
    at their first failed attempt."""
    query = "SELECT 1 FROM outbox WHERE status = 'pending' AND created_ms = 0 LIMIT 1"
    if db.execute(query).fetchone() is None:
        return  # the usual case: no write at start (the disk may be full, or read-only)
    db.execute(
        "UPDATE outbox SET created_ms = ? WHERE status = 'pending' AND created_ms = 0",
        (round(time.time() * 1000),),
    )
