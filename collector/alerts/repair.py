"""Checking the alert database, and salvaging a damaged one.

The collector refuses to start on a damaged alert database (``SqliteAlertStore``), so
the operator decides what happens to it:

- ``smartunit alerts-db check`` runs SQLite's full ``integrity_check`` and reports;
- ``smartunit alerts-db recover`` keeps the damaged file (and its write-ahead log) beside
  the database as ``alerts.db.damaged-<UTC time>``, salvages every row still readable into
  a fresh database with the current schema, and swaps that in.

Salvage uses the ``sqlite3`` shell's ``.recover`` when the shell has it (it reads the
pages themselves, so it finds rows that no longer hang off an intact tree), and else
reads each table in rowid order, stepping over the ranges that cannot be read. The
damaged file is only ever read through a scratch copy: opening a database can replay its
write-ahead log into it, which must not alter the evidence.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.alerts.store import SqliteAlertStore, integrity_problems

# Salvaged in this order: an alert before its events, so nothing is left dangling.
TABLES: tuple[str, ...] = ("alerts", "alert_events", "outbox", "silences")
SIDE_FILES: tuple[str, ...] = ("-wal", "-shm")
RECOVER_TIMEOUT_S = 600.0
# Rowid scans step over an unreadable range by doubling jumps; past this, nothing is left.
MAX_ROWID = 2**63 - 1
SALVAGE_CHUNK_ROWS = 500


@dataclass
class Salvage:
    """What ``recover`` saved, and where it kept the damaged file."""

    kept: Path
    method: str
    rows: dict[str, int] = field(default_factory=dict)
    active_alerts: int = 0
    pending_deliveries: int = 0
    unreadable_ranges: int = 0
    orphan_events: int = 0

    def summary(self) -> str:
        rows = self.rows
        return (
            f"saved {rows.get('alerts', 0)} alerts ({self.active_alerts} active), "
            f"{rows.get('alert_events', 0)} events, {rows.get('outbox', 0)} deliveries "
            f"({self.pending_deliveries} still to make), {rows.get('silences', 0)} silences "
            f"[{self.method}]; {self.unreadable_ranges} unreadable range(s) skipped, "
            f"{self.orphan_events} events of unreadable alerts left out; "
            f"the damaged file is kept as {self.kept}"
        )


def check(path: Path) -> list[str]:
    """Everything SQLite's full integrity check finds wrong with the file; empty if sound."""
    db = sqlite3.connect(f"file:{path}?mode=rw", uri=True)  # never creates one
    try:
        return integrity_problems(db, thorough=True)
    finally:
        db.close()


def recover(path: Path, *, shell: str | None = None) -> Salvage:
    """Salvage the damaged database at ``path`` into a fresh one, in its place.

    ``shell`` is the ``sqlite3`` shell to try ``.recover`` with (by default the one on
    PATH). The collector must not be running on the file (it refuses a damaged one).
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    kept = path.with_name(f"{path.name}.damaged-{stamp}")
    work = Path(tempfile.mkdtemp(prefix=f".{path.name}.recover-", dir=path.parent))
    try:
        for suffix in ("", *SIDE_FILES):
            source = Path(f"{path}{suffix}")
            if source.exists():
                shutil.copy2(source, f"{kept}{suffix}")
                shutil.copy2(source, work / f"damaged.db{suffix}")
        fresh = work / "fresh.db"
        SqliteAlertStore(fresh).close()  # the current schema, empty
        readable, method = _readable_copy(work, shell or shutil.which("sqlite3"))
        salvage = Salvage(kept=kept, method=method)
        _copy_rows(readable, fresh, salvage)
        db = sqlite3.connect(fresh)
        try:
            problems = integrity_problems(db, thorough=True)
        finally:
            db.close()
        if problems:  # cannot happen with SQLite's own writes; never swap in a bad file
            raise sqlite3.DatabaseError(f"the salvaged database fails its check: {problems[0]}")
        _fsync(fresh)
        for suffix in SIDE_FILES:  # they belong to the damaged file, kept beside it
            with contextlib.suppress(FileNotFoundError):
                Path(f"{path}{suffix}").unlink()
        os.replace(fresh, path)
        _fsync(path.parent)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return salvage


def _readable_copy(work: Path, shell: str | None) -> tuple[Path, str]:
    """A database to read the rows from: what ``.recover`` rebuilt, or the damaged copy."""
    damaged = work / "damaged.db"
    if shell is None or not damaged.exists():
        return damaged, "row by row"
    try:
        done = subprocess.run(
            [shell, str(damaged), ".recover"],
            capture_output=True,
            text=True,
            timeout=RECOVER_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return damaged, "row by row"
    if done.returncode != 0:  # e.g. a shell built without the page reader .recover needs
        return damaged, "row by row"
    rebuilt = work / "rebuilt.db"
    db = sqlite3.connect(rebuilt, isolation_level=None)
    try:
        db.executescript(done.stdout)
    except sqlite3.DatabaseError:
        db.close()
        rebuilt.unlink(missing_ok=True)
        return damaged, "row by row"
    db.close()
    return rebuilt, "sqlite3 .recover"


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    try:
        return [str(row[1]) for row in db.execute(f"PRAGMA table_info({table})")]
    except sqlite3.DatabaseError:
        return []  # the schema itself is unreadable


def _readable_rows(
    db: sqlite3.Connection, table: str, columns: list[str], salvage: Salvage
) -> Iterator[tuple[object, ...]]:
    """Every row of ``table`` that can be read, in rowid order.

    Rows come in chunks; a chunk that meets a damaged page is read again one row at a
    time up to it (the driver reads one row ahead, so the row before the damage would be
    lost with it). A search for a later rowid descends the tree from the root, so it can
    land beyond the damaged page: reading resumes at the first rowid such a search
    reaches, until there are no rowids left.
    """
    query = (
        f"SELECT rowid, {', '.join(columns)} FROM {table} WHERE rowid >= ? ORDER BY rowid LIMIT ?"
    )

    def fetch(first: int, limit: int) -> list[tuple[Any, ...]] | None:
        try:
            return [tuple(row) for row in db.execute(query, (first, limit))]
        except sqlite3.DatabaseError:
            return None

    start = -MAX_ROWID - 1
    while True:
        rows = fetch(start, SALVAGE_CHUNK_ROWS)
        if rows is None:
            rows = fetch(start, 1)
        if rows is None:
            salvage.unreadable_ranges += 1
            following = _first_reachable_rowid(db, table, start + 1)
            if following is None:
                return
            start = following
            continue
        if not rows:
            return
        for row in rows:
            yield row[1:]
        start = int(rows[-1][0]) + 1


def _first_reachable_rowid(db: sqlite3.Connection, table: str, start: int) -> int | None:
    """The first rowid from ``start`` on that a search can reach past damaged pages."""
    query = f"SELECT rowid FROM {table} WHERE rowid >= ? ORDER BY rowid LIMIT 1"

    def reach(offset: int) -> tuple[bool, int | None]:
        try:
            found = db.execute(query, (start + offset,)).fetchone()
        except sqlite3.DatabaseError:
            return False, None
        return True, None if found is None else int(found[0])

    ok, found = reach(0)
    if ok:
        return found
    failed, step = 0, 1
    while start <= MAX_ROWID - step:  # double the jump until a search gets through ...
        ok, found = reach(step)
        if ok:
            break
        failed, step = step, step * 2
    else:
        return None
    while step - failed > 1:  # ... then narrow down to the first one that does
        middle = (failed + step) // 2
        ok, nearer = reach(middle)
        if ok:
            step, found = middle, nearer
        else:
            failed = middle
    return found


def _copy_rows(readable: Path, fresh: Path, salvage: Salvage) -> None:
    # Two connections: a read that meets a damaged page must not disturb the writes.
    old = sqlite3.connect(readable)
    db = sqlite3.connect(fresh, isolation_level=None)
    try:
        db.execute("PRAGMA foreign_keys=OFF")  # events are checked against alerts below
        db.execute("BEGIN")
        for table in TABLES:
            present = set(_columns(old, table))
            columns = [c for c in _columns(db, table) if c in present]
            count = 0
            if columns:
                insert = (
                    f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) "
                    f"VALUES ({', '.join('?' for _ in columns)})"
                )
                for row in _readable_rows(old, table, columns, salvage):
                    count += db.execute(insert, row).rowcount
            salvage.rows[table] = count
        salvage.orphan_events = db.execute(
            "DELETE FROM alert_events WHERE alert_id NOT IN (SELECT id FROM alerts)"
        ).rowcount
        salvage.rows["alert_events"] -= salvage.orphan_events
        _keep_numbering(db, _old_alert_counter(old))
        db.execute("COMMIT")
        salvage.active_alerts = db.execute(
            "SELECT count(*) FROM alerts WHERE state != 'closed'"
        ).fetchone()[0]
        salvage.pending_deliveries = db.execute(
            "SELECT count(*) FROM outbox WHERE status = 'pending'"
        ).fetchone()[0]
    finally:
        db.close()
        old.close()


def _old_alert_counter(old: sqlite3.Connection) -> int:
    try:
        found = old.execute("SELECT seq FROM sqlite_sequence WHERE name = 'alerts'").fetchone()
    except sqlite3.DatabaseError:
        return 0  # unreadable, or a file that never was a database
    return int(found[0]) if found else 0


def _keep_numbering(db: sqlite3.Connection, old_counter: int) -> None:
    """Never hand out again an alert id or event number that was used before the damage.

    A delivery's idempotency key is ``<alert id>-<seq>``: a reused pair would collide
    with a delivery still in the outbox and be dropped as a duplicate, and a receiver
    that saw the old event would ignore the new one.
    """
    db.execute(
        "UPDATE alerts SET last_seq = max(last_seq, "
        "coalesce((SELECT max(seq) FROM alert_events e WHERE e.alert_id = alerts.id), 0), "
        "coalesce((SELECT max(seq) FROM outbox o WHERE o.alert_id = alerts.id), 0))"
    )
    highest = db.execute(
        "SELECT max(coalesce((SELECT max(id) FROM alerts), 0), "
        "coalesce((SELECT max(alert_id) FROM outbox), 0), ?)",
        (old_counter,),
    ).fetchone()[0]
    db.execute("DELETE FROM sqlite_sequence WHERE name = 'alerts'")
    db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('alerts', ?)", (highest,))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
