"""The connection of the PostgreSQL alert store (collector/alerts/pgstore.py): one per
instance, made again on the first use after PostgreSQL went away, and what its failures
look like while it cannot be used.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from collector.alerts.pgschema import prepare
from collector.urls import redact_url

log = logging.getLogger(__name__)

# What a PostgreSQL store raises while it cannot be used for now: the server down or
# restarting, the connection lost or closed, a statement timed out.
UNAVAILABLE: tuple[type[Exception], ...] = (psycopg.OperationalError, psycopg.InterfaceError)

# The database's clock in milliseconds: leases are compared on one clock, not the
# instances' own.
DB_NOW_MS = "(extract(epoch from clock_timestamp()) * 1000)::bigint"

# A lost server must not hang a write for the kernel's TCP timeout (minutes): the
# connection gives up within seconds and the write waits in the pending list instead.
CONNECT_OPTIONS: dict[str, Any] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
    "options": "-c statement_timeout=30000",
    "application_name": "smartunit-collector",
}

Row = tuple[Any, ...]


def instance_name() -> str:
    """This process among the instances sharing the store: host, process, and a random
    part (a restarted process may get the same id)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class PgDatabase:
    """One connection shared by the repositories (alerts are not hot: one is enough),
    made again on the first use after it broke."""

    def __init__(self, url: str, *, holder: str, lease_s: float) -> None:
        self.url = url
        self.where = redact_url(url)
        self.holder = holder
        self.lease_ms = round(lease_s * 1000)
        self.lock = threading.RLock()  # the collector loop, sweeps and API threads
        self._db: psycopg.Connection[Row] | None = None
        self._prepared = False
        try:
            self.connection()
        except UNAVAILABLE as exc:  # start anyway: detections wait until it is back
            log.error(
                "alert store unreachable at start; detections wait until it is back",
                extra={"store": self.where, "error": str(exc)[:300]},
            )

    def connection(self) -> psycopg.Connection[Row]:
        with self.lock:
            if self._db is not None and (self._db.closed or self._db.broken):
                self._forget()
            if self._db is None:
                db = psycopg.connect(self.url, autocommit=True, **CONNECT_OPTIONS)
                try:
                    if not self._prepared:
                        prepare(db, self.where)
                        self._prepared = True
                except BaseException:
                    db.close()
                    raise
                if self._prepared:
                    log.info("alert store connected", extra={"store": self.where})
                self._db = db
            return self._db

    def _forget(self) -> None:
        if self._db is not None:
            with contextlib.suppress(Exception):
                self._db.close()
        self._db = None

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Row]]:
        with self.lock:
            db = self.connection()
            try:
                with db.transaction():
                    yield db
            except psycopg.Error:
                if db.broken or db.closed:
                    self._forget()
                raise

    @contextmanager
    def reading(self) -> Iterator[psycopg.Connection[Row]]:
        with self.lock:
            db = self.connection()
            try:
                yield db
            except psycopg.Error:
                if db.broken or db.closed:
                    self._forget()
                raise

    def close(self) -> None:
        with self.lock:
            self._forget()
