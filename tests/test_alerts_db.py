"""A damaged alert database: a clear refusal at start, and a recovery that keeps what it can."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from collector.alerts.model import Alert, AlertEvent, EventType, Fingerprint, State
from collector.alerts.outbox import OutboxEntry
from collector.alerts.repair import recover
from collector.alerts.store import SqliteAlertStore
from fieldtools.demo import wait_for_collector
from fieldtools.localservices import spawn, stop_process
from tests.conftest import collector_env

ALERTS = 400
PAGE = 4096


def fill(path: Path) -> None:
    """ALERTS alerts, each with an event and a pending delivery, spread over many pages."""
    store = SqliteAlertStore(path)
    for i in range(ALERTS):
        alert = Alert(
            id=0,
            fingerprint=Fingerprint(f"gas-{i}", "lel_pct", "threshold"),
            state=State.OPEN,
            colour="red",
            family="chem",
            unit="chem-a",
            hierarchy={"city": "suzhou", "note": "x" * 200},
            value=55.0,
            started_at_ms=1_000 + i,
            updated_at_ms=1_000 + i,
        )
        opened = AlertEvent(
            0, 1, EventType.OPENED, 1_000 + i, "detector", "", State.OPEN, "red", 55
        )
        alert, events = store.alerts.create(alert, [opened])
        entry = OutboxEntry("hotline", events[0].id, alert.id, 1, b"{}")
        store.alerts.save(alert, [], [entry])
    store.close()  # checkpoints the write-ahead log into the file


def damage_pages(path: Path) -> None:
    """Overwrite two leaf pages of the alerts table (one in the middle, the last) with junk."""
    with sqlite3.connect(path) as db:
        leaves = [
            page
            for (page,) in db.execute(
                "SELECT pageno FROM dbstat WHERE name = 'alerts' AND pagetype = 'leaf' "
                "ORDER BY pageno"
            )
        ]
    assert len(leaves) > 4
    with path.open("r+b") as file:
        for page in (leaves[len(leaves) // 2], leaves[-1]):
            file.seek((page - 1) * PAGE)
            file.write(bytes([0xA5, 0x3C]) * (PAGE // 2))


def readable_alerts(path: Path, scratch: Path) -> set[int]:
    """Ids of the alerts that a lookup by id can still read from the damaged file."""
    shutil.copy(path, scratch)
    found = set()
    with sqlite3.connect(scratch) as db:
        for alert_id in range(1, ALERTS + 1):
            try:
                row = db.execute("SELECT * FROM alerts WHERE id = ?", (alert_id,)).fetchone()
            except sqlite3.DatabaseError:
                continue
            if row is not None:
                found.add(alert_id)
    return found


def smartunit(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "collector.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["pages", "not_a_database"])
def test_damaged_alert_database_is_refused_clearly_and_recovered(
    broker, influxdb, database, tmp_path: Path, damage: str
) -> None:
    client_id = f"adb-{database}"
    config = tmp_path / "smartunit.toml"
    config.write_text(f'[mqtt]\nclient_id = "{client_id}"\n[detection]\nwarm_start_hours = 0\n')
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    alerts_db = data_dir / "alerts.db"
    if damage == "pages":
        fill(alerts_db)
        damage_pages(alerts_db)
        readable = readable_alerts(alerts_db, tmp_path / "scratch.db")
        assert 0 < len(readable) < ALERTS  # the damage is real, and not total
    else:
        alerts_db.write_text("alert log\n" * 1000)
        readable = set()
    damaged_bytes = alerts_db.read_bytes()
    env = collector_env(broker, influxdb, database, data_dir)
    command = [sys.executable, "-m", "collector.cli", "run", "--config", str(config)]

    # The collector refuses to start: exit 1, one line naming the file and the remedy.
    log_path = tmp_path / "refused.log"
    refused = spawn(command, env=env, log_path=log_path)
    assert refused.wait(timeout=120) == 1, log_path.read_text()[-3000:]
    log = log_path.read_text()
    assert "Traceback" not in log, log
    lines = [line for line in log.splitlines() if "is damaged" in line]
    assert len(lines) == 1, log
    assert str(alerts_db) in lines[0]
    assert f"smartunit alerts-db recover --config {config}" in lines[0]

    checked = smartunit("alerts-db", "check", "--config", str(config), env=env)
    assert checked.returncode == 1, checked
    assert "damaged" in checked.stdout
    assert "Traceback" not in checked.stderr

    recovered = smartunit("alerts-db", "recover", "--config", str(config), env=env)
    assert recovered.returncode == 0, recovered
    (kept,) = [
        p
        for p in data_dir.glob("alerts.db.damaged-*")
        if not p.name.endswith("-shm") and not p.name.endswith("-wal")
    ]
    assert kept.read_bytes() == damaged_bytes  # the evidence, untouched

    with sqlite3.connect(alerts_db) as db:
        ids = {row[0] for row in db.execute("SELECT id FROM alerts")}
        pending = {row[0] for row in db.execute("SELECT alert_id FROM outbox")}
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert readable <= ids <= set(range(1, ALERTS + 1))  # every alert that could be read
    assert f"saved {len(ids)} alerts" in recovered.stdout, recovered.stdout
    if damage == "pages":
        assert len(pending) == ALERTS  # the outbox's own pages were intact: every delivery
    assert smartunit("alerts-db", "check", "--config", str(config), env=env).returncode == 0

    # A new alert never takes the number of one lost to the damage (its deliveries'
    # idempotency keys would collide with those still in the outbox).
    store = SqliteAlertStore(alerts_db)
    alert = Alert(
        id=0,
        fingerprint=Fingerprint("gas-new", "lel_pct", "threshold"),
        state=State.OPEN,
        colour="red",
        family="chem",
        unit="chem-a",
        hierarchy={},
        value=1.0,
        started_at_ms=1,
        updated_at_ms=1,
    )
    new, _ = store.alerts.create(alert, [])
    store.close()
    assert new.id > (ALERTS if damage == "pages" else 0)

    # The collector starts on the recovered database, and stops cleanly.
    log_path = tmp_path / "restarted.log"
    restarted = spawn(command, env=env, log_path=log_path)
    try:
        wait_for_collector(broker.url, client_id, timeout_s=120)
    except Exception:
        stop_process(restarted)
        raise AssertionError(log_path.read_text()[-3000:]) from None
    code = stop_process(restarted, timeout_s=60)
    assert code == 0, log_path.read_text()[-2000:]
    assert "Traceback" not in log_path.read_text()


@pytest.mark.parametrize("works", [True, False])
def test_recover_uses_the_sqlite3_shell_when_it_can(tmp_path: Path, works: bool) -> None:
    """What ``.recover`` rebuilds is read like any database; a shell without it (exit 1, as
    one built without the page reader) leaves the row-by-row salvage to do the work."""
    path = tmp_path / "alerts.db"
    fill(path)
    damage_pages(path)
    rebuilt = (
        "BEGIN;\n"
        "CREATE TABLE alerts(id INTEGER PRIMARY KEY, fingerprint, device, quantity, detector,"
        " state, colour, family, unit, hierarchy, value, started_at_ms, updated_at_ms,"
        " condition_active, condition_changed_at_ms, acknowledged, extra, last_seq);\n"
        "INSERT INTO alerts VALUES (7, 'k', 'gas-7', 'lel_pct', 'threshold', 'open', 'red',"
        " 'chem', 'chem-a', '{}', 55.0, 1, 1, 1, 1, 0, '{}', 1);\n"
        "CREATE TABLE lost_and_found(rootpgno, pgno, nfield, id, c0, c1);\n"
        "COMMIT;\n"
    )
    shell = tmp_path / "sqlite3"
    shell.write_text(
        f"#!{sys.executable}\nimport sys\n"
        + (f"sys.stdout.write({rebuilt!r})\n" if works else "sys.exit(1)\n")
    )
    shell.chmod(0o755)

    salvage = recover(path, shell=str(shell))

    with sqlite3.connect(path) as db:
        ids = {row[0] for row in db.execute("SELECT id FROM alerts")}
    if works:
        assert salvage.method == "sqlite3 .recover"
        assert ids == {7}
    else:
        assert salvage.method == "row by row"
        assert 7 in ids
        assert len(ids) > ALERTS // 2


def test_an_alert_stored_by_the_schema_before_reads_back_with_typed_fields(tmp_path: Path) -> None:
    """The bookkeeping JSON of a version-1 file (keys written by every version since) is
    read into the alert's fields and written back unchanged: older code can read it too."""
    path = tmp_path / "alerts.db"
    SqliteAlertStore(path).close()
    stored = {
        "level": "street",
        "level_since_ms": 5_000,
        "threshold": 25.0,
        "receivers": ["duty", "orders"],
        "incident": 3,
        "incident_colour": "red",
        "toggles_ms": [4_000, 4_500],
        "flapping": True,
        "dispatched": True,
        "acknowledged_colour": "orange",
        "acknowledged_by": "console:desk",
        "resolved_at_ms": 6_000,
        "peak": 58.0,
        "peak_colour": "red",
    }
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:  # version 1
        db.execute("ALTER TABLE outbox DROP COLUMN created_ms")
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema'")
        for alert_id, extra in ((7, stored), (8, {})):
            db.execute(
                "INSERT INTO alerts VALUES (?, ?, ?, 'lel_pct', 'threshold', 'resolved', 'red',"
                " 'chem', 'chem-a', '{}', 55.0, 1000, 6000, 0, 5500, 1, ?, 1)",
                (alert_id, f"gas-{alert_id}", f"gas-{alert_id}", json.dumps(extra)),
            )
    store = SqliteAlertStore(path)
    try:
        old, bare = store.alerts.get(7), store.alerts.get(8)
        assert old is not None and bare is not None
        assert (old.level, old.level_since_ms, old.threshold) == ("street", 5_000, 25.0)
        assert old.receivers == ["duty", "orders"]
        assert (old.incident, old.incident_colour) == (3, "red")
        assert (old.toggles_ms, old.flapping, old.dispatched) == ([4_000, 4_500], True, True)
        assert (old.acknowledged_colour, old.acknowledged_by) == ("orange", "console:desk")
        assert (old.resolved_at_ms, old.peak, old.peak_colour) == (6_000, 58.0, "red")
        assert (bare.level, bare.level_since_ms, bare.incident, bare.receivers) == (
            "grid",
            None,
            8,
            [],
        )
        store.alerts.save(old, [])
        store.alerts.save(bare, [])
    finally:
        store.close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = dict(db.execute("SELECT id, extra FROM alerts").fetchall())
    assert json.loads(rows[7]) == stored
    assert json.loads(rows[8]) == {
        "level": "grid",
        "receivers": [],
        "toggles_ms": [],
        "flapping": False,
        "dispatched": False,
    }


def test_alerts_db_checks_the_file_the_store_url_names(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    chosen = data_dir / "book" / "alerts.db"
    chosen.parent.mkdir(parents=True)
    chosen.write_text("alert log\n" * 1000)
    SqliteAlertStore(data_dir / "alerts.db").close()  # a sound file where the default is
    config = tmp_path / "smartunit.toml"
    config.write_text('[alerts]\nstore = "sqlite:///book/alerts.db"\n')
    env = {**os.environ, "SMARTUNIT_DATA_DIR": str(data_dir)}

    checked = smartunit("alerts-db", "check", "--config", str(config), env=env)

    assert checked.returncode == 1, checked
    assert "damaged" in checked.stdout and str(chosen) in checked.stdout
