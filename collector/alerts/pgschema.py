"""The PostgreSQL alert store's schema: the SQLite store's tables (collector/alerts/schema.py)
with the same columns and invariants, plus what several collector instances sharing the
store need: who holds each outbox row (``claimed_by`` until ``claim_until_ms``) and who
runs each sweep of the alert clock (``leases``).

Every instance prepares the schema when it starts, under an advisory lock, so instances
starting together do not race to create it. A database of a newer version than this code
knows is refused, as the SQLite store refuses such a file.
"""

from __future__ import annotations

from pathlib import Path

import psycopg

from collector.errors import AlertStoreError

SCHEMA_VERSION = 1

# The tables mirror collector/alerts/schema.py column for column: a column added there is
# added here too (and read and written in collector/alerts/pgstore.py), with an
# ``ALTER TABLE ... ADD COLUMN IF NOT EXISTS`` after the tables for databases created
# before, and SCHEMA_VERSION raised (every statement here is idempotent: running them
# is the upgrade).

# An arbitrary constant: the advisory lock key under which the schema is prepared.
SCHEMA_LOCK = 0x5347_5354  # "SGST"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS alerts (
    id BIGSERIAL PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    device TEXT NOT NULL,
    quantity TEXT NOT NULL,
    detector TEXT NOT NULL,
    state TEXT NOT NULL,
    colour TEXT NOT NULL,
    family TEXT NOT NULL,
    unit TEXT NOT NULL,
    hierarchy TEXT NOT NULL,
    value DOUBLE PRECISION,
    started_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    condition_active BOOLEAN NOT NULL,
    condition_changed_at_ms BIGINT NOT NULL,
    acknowledged BOOLEAN NOT NULL,
    extra TEXT NOT NULL,
    last_seq INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS one_active_alert_per_fingerprint
    ON alerts(fingerprint) WHERE state != 'closed';
CREATE INDEX IF NOT EXISTS alerts_by_state ON alerts(state);
CREATE INDEX IF NOT EXISTS alerts_by_unit ON alerts(unit, state);
CREATE TABLE IF NOT EXISTS alert_events (
    alert_id BIGINT NOT NULL REFERENCES alerts(id),
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    actor TEXT NOT NULL,
    note TEXT NOT NULL,
    state TEXT NOT NULL,
    colour TEXT NOT NULL,
    value DOUBLE PRECISION,
    PRIMARY KEY (alert_id, seq)
);
CREATE TABLE IF NOT EXISTS outbox (
    id BIGSERIAL PRIMARY KEY,
    receiver TEXT NOT NULL,
    event_key TEXT NOT NULL,
    alert_id BIGINT NOT NULL,
    seq INTEGER NOT NULL,
    payload BYTEA NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    delivered_ms BIGINT,
    created_ms BIGINT NOT NULL DEFAULT 0,
    claimed_by TEXT,
    claim_until_ms BIGINT NOT NULL DEFAULT 0,
    UNIQUE (receiver, event_key)
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(status, receiver, alert_id, seq);
CREATE TABLE IF NOT EXISTS silences (
    id BIGSERIAL PRIMARY KEY,
    unit TEXT,
    device TEXT,
    starts_ms BIGINT NOT NULL,
    ends_ms BIGINT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until_ms BIGINT NOT NULL
);
"""


def prepare(db: psycopg.Connection[tuple[object, ...]], where: str) -> None:
    """Create or check the schema of a database just connected to (autocommit mode)."""
    with db.transaction():
        db.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        db.execute(SCHEMA)
        found = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        version = None if found is None else int(str(found[0]))
        if version is not None and version > SCHEMA_VERSION:
            raise AlertStoreError(
                f"alert database {where} has schema {version}, this version reads {SCHEMA_VERSION}",
                path=Path(where),
            )
        # An older schema was brought up to date by SCHEMA's idempotent statements.
        db.execute(
            "INSERT INTO meta VALUES ('schema', %s) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            (str(SCHEMA_VERSION),),
        )
