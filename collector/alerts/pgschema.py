"""The PostgreSQL alert store's schema: the SQLite store's tables (``TABLES`` of
collector/alerts/schema.py, in PostgreSQL's types) with the same columns and invariants,
plus what several collector instances sharing the store need: who holds each outbox row
(``claimed_by`` until ``claim_until_ms``) and who runs each sweep of the alert clock
(``leases``).

Every instance prepares the schema when it starts, under an advisory lock, so instances
starting together do not race to create it. A database of a newer version than this code
knows is refused, as the SQLite store refuses such a file.
"""

from __future__ import annotations

from pathlib import Path

import psycopg

from collector.alerts.schema import TABLES
from collector.errors import AlertStoreError

SCHEMA_VERSION = 1

# A column added to collector/alerts/schema.py's TABLES comes here too: PostgreSQL
# databases created before get it from an ``ALTER TABLE ... ADD COLUMN IF NOT EXISTS``
# after the tables, with SCHEMA_VERSION raised (every statement here is idempotent:
# running them is the upgrade).

# An arbitrary constant: the advisory lock key under which the schema is prepared.
SCHEMA_LOCK = 0x5347_5354  # "SGST"

SCHEMA = TABLES.format(
    serial="BIGSERIAL PRIMARY KEY",
    id="BIGINT",
    ms="BIGINT",
    real="DOUBLE PRECISION",
    flag="BOOLEAN",
    blob="BYTEA",
    claims="    claimed_by TEXT,\n    claim_until_ms BIGINT NOT NULL DEFAULT 0,\n",
    tables="""CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until_ms BIGINT NOT NULL
);
""",
)


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
