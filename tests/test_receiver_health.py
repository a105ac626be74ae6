"""A receiver that refuses everything is named, shown, and given up on, never silently.

A running collector has two receivers: a work-order system that answers at once, and one
that answers 500 to everything. Gas alarms go out; past the refusing receiver's
``alert_after_s`` an operator alert names it, through the other receiver (never through
itself); the API and ``/metrics`` show its backlog and its answer; the other receiver's
events are not held up; past ``give_up_after_s`` its events are in the dead-letter list
and the alert is red. Once it answers again the alert clears.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from pydantic import SecretStr

from collector.alerts.health import RECEIVER_FAILING_DETECTOR, ReceiverHealth
from collector.alerts.model import Alert, Fingerprint, State
from collector.alerts.store import SqliteAlertStore
from collector.config import ReceiverSettings
from collector.operator import ReceiverWatch
from tests.conftest import influx_rows, poll
from tests.receivers import QuietHandler, WorkOrders, serve
from tests.test_console import CHROMIUM, CHROMIUM_ARGS, browser_driver, keep
from tests.test_webhook_lanes import gas_alarm, gas_plant

TOKEN = "tok-receivers"
ALERT_AFTER_S = 2.0
GIVE_UP_AFTER_S = 12.0
REFUSAL = "work-order database unavailable"


class Refusing(QuietHandler):
    """Answers 500 with a short reason until told to accept; records what it accepts."""

    accept = threading.Event()
    requests = 0
    accepted: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        type(self).requests += 1
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.accept.is_set():
            self.accepted.append(json.loads(body))
            self.answer(204)
            return
        self.answer(500, REFUSAL.encode())


@pytest.fixture
def receivers() -> Iterator[tuple[str, str]]:
    Refusing.accept.clear()
    Refusing.requests, Refusing.accepted = 0, []
    WorkOrders.reset(secret=None)
    refusing, orders = serve(Refusing), serve(WorkOrders)
    yield refusing.url, orders.url
    refusing.stop()
    orders.stop()


def events(detector: str, device: str) -> list[dict[str, Any]]:
    return [
        m["event"] | {"colour": m["alert"]["colour"], "family": m["alert"]["family"]}
        for m in WorkOrders.processed
        if m["alert"]["detector"] == detector and m["alert"]["device"] == device
    ]


def start(
    make_settings: Any,
    run_collector: Any,
    tmp_path: Path,
    urls: tuple[str, str],
    *,
    retry_initial_s: float = 0.3,
    retry_max_s: float = 1.0,
) -> Any:
    refusing_url, orders_url = urls
    settings = gas_plant(
        make_settings,
        tmp_path,
        [
            ReceiverSettings(
                name="refusing",
                url=refusing_url,
                alert_after_s=ALERT_AFTER_S,
                give_up_after_s=GIVE_UP_AFTER_S,
            ),
            ReceiverSettings(name="work-orders", url=orders_url),
        ],
        http={"tokens": {"ops": SecretStr(TOKEN)}},
        retry_initial_s=retry_initial_s,
        retry_max_s=retry_max_s,
    )
    return settings, run_collector(settings)


@pytest.mark.slow
def test_a_refusing_receiver_is_named_shown_and_given_up_on(
    make_settings, run_collector, publisher, tmp_path: Path, receivers, caplog
) -> None:
    caplog.set_level(logging.WARNING, logger="collector.alerts.dispatch")
    settings, collector = start(make_settings, run_collector, tmp_path, receivers)
    api = httpx.Client(
        base_url=f"http://127.0.0.1:{settings.http.port}",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )

    def health(name: str) -> dict[str, Any]:
        (found,) = [r for r in api.get("/api/receivers").json() if r["name"] == name]
        return found

    gas_alarm(publisher, "gas-1")
    failing = poll(lambda: events(RECEIVER_FAILING_DETECTOR, "refusing"), lambda e: e, timeout_s=30)
    # The operator alert names the receiver, through the other one.
    assert failing[0]["type"] == "opened" and failing[0]["colour"] == "orange", failing
    assert failing[0]["family"] == "system"
    assert [e["type"] for e in events("combustible-gas", "gas-1")][:2] == ["opened", "dispatched"]

    # Another alarm while it refuses: the work-order system has it at once.
    gas_alarm(publisher, "gas-2")
    second = poll(lambda: events("combustible-gas", "gas-2"), lambda e: len(e) >= 2)
    assert [e["type"] for e in second] == ["opened", "dispatched"]
    refusing = health("refusing")
    assert refusing["failing"] and refusing["alert"] == "orange", refusing
    assert refusing["pending"] >= 2 and refusing["oldest_pending_age_s"] >= ALERT_AFTER_S
    assert refusing["consecutive_failures"] >= 2 and refusing["last_status"] == 500
    assert refusing["last_error"] == f"HTTP 500: {REFUSAL}"
    assert refusing["failing_since_ms"] <= time.time() * 1000 - ALERT_AFTER_S * 1000
    orders = health("work-orders")
    assert not orders["failing"] and orders["pending"] == 0 and orders["alert"] is None
    metrics = api.get("/metrics").text
    assert 'smartunit_webhook_failing_alert{receiver="refusing"} 1' in metrics
    assert 'smartunit_webhook_last_error_status{receiver="refusing"} 500' in metrics
    assert 'smartunit_webhook_consecutive_failures{receiver="refusing"} ' in metrics

    # Past the give-up age: its events are in the dead-letter list, and the alert is red.
    refusing = poll(lambda: health("refusing"), lambda r: r["dead"] >= 2, timeout_s=30)
    assert refusing["dead"] >= 2 and refusing["given_up"] >= 2, refusing
    red = poll(
        lambda: events(RECEIVER_FAILING_DETECTOR, "refusing"),
        lambda e: any(x["type"] == "colour_changed" for x in e),
    )
    assert red[-1]["colour"] == "red", red
    database = settings.data_dir / settings.alerts.database
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        dead = db.execute(
            "SELECT last_error FROM outbox WHERE receiver = 'refusing' AND status = 'dead'"
        ).fetchall()
        own = db.execute(
            "SELECT count(*) FROM outbox o JOIN alerts a ON a.id = o.alert_id "
            "WHERE o.receiver = 'refusing' AND a.detector = ?",
            (RECEIVER_FAILING_DETECTOR,),
        ).fetchone()[0]
    assert dead and all(e.startswith("given up after") for (e,) in dead), dead
    assert all(e.endswith(f"HTTP 500: {REFUSAL}") for (e,) in dead), dead
    assert own == 0  # the alert about it never waits on it

    # Logged with its answer, but not once per attempt.
    failed = [r for r in caplog.records if r.getMessage() == "webhook delivery failed; will retry"]
    assert failed and all(r.receiver == "refusing" for r in failed)  # type: ignore[attr-defined]
    assert failed[0].error == f"HTTP 500: {REFUSAL}"  # type: ignore[attr-defined]
    attempts = health("refusing")["failed_attempts"]
    assert len(failed) < attempts
    print(f"\nrefusing receiver: {attempts} failed attempts, {len(failed)} log line(s)")
    assert any("dead-letter" in r.getMessage() for r in caplog.records)

    # It answers again: its next event goes through, the alert clears, the backlog drains.
    Refusing.accept.set()
    gas_alarm(publisher, "gas-3")
    poll(lambda: Refusing.accepted, lambda a: any(m["alert"]["device"] == "gas-3" for m in a))
    cleared = poll(
        lambda: events(RECEIVER_FAILING_DETECTOR, "refusing"),
        lambda e: any(x["type"] == "recovered" for x in e),
        timeout_s=30,
    )
    assert cleared[-1]["type"] == "recovered", cleared
    refusing = poll(lambda: health("refusing"), lambda r: r["pending"] == 0)
    assert not refusing["failing"] and refusing["alert"] is None and refusing["pending"] == 0
    assert refusing["consecutive_failures"] == 0 and refusing["dead"] >= 2
    assert all(m["alert"]["detector"] != RECEIVER_FAILING_DETECTOR for m in Refusing.accepted)
    recorded = poll(  # raised, red, cleared: each a point beside the devices' detections
        lambda: influx_rows(
            settings.influx,
            f"SELECT kind, colour, value FROM detections WHERE detector = "
            f"'{RECEIVER_FAILING_DETECTOR}' AND device = 'refusing'",
        ),
        lambda found: len(found) >= 3,
    )
    assert [(r["kind"], r["colour"]) for r in recorded] == [
        ("raised", "orange"),
        ("changed", "red"),
        ("cleared", "green"),
    ]
    collector.stop()


@pytest.mark.slow
def test_the_console_shows_a_failing_receiver_until_it_delivers(
    make_settings, run_collector, publisher, tmp_path: Path, receivers
) -> None:
    sync_api = browser_driver()
    assert Path(CHROMIUM).exists(), "Debian's chromium is installed by scripts/install-deps.sh"
    settings, collector = start(make_settings, run_collector, tmp_path, receivers)
    base = f"http://127.0.0.1:{settings.http.port}"
    api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"})

    def refusing() -> dict[str, Any]:
        return next(r for r in api.get("/api/receivers").json() if r["name"] == "refusing")

    gas_alarm(publisher, "gas-1")
    poll(refusing, lambda r: r["alert"] == "orange", timeout_s=30)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 900})
        page.add_init_script("localStorage.setItem('smartunit.lang', 'en')")  # its words below
        page.goto(base + "/")
        page.fill("#login-actor", "duty officer Li")
        page.fill("#login-token", TOKEN)
        page.click("#login-submit")
        sign = page.locator('#receivers [data-receiver="refusing"]')
        sign.wait_for(timeout=15_000)
        text = sign.inner_text()
        assert "refusing: failing for" in text and f"HTTP 500: {REFUSAL}" in text, text
        assert page.locator('#receivers [data-receiver="work-orders"]').count() == 0
        page.screenshot(path=tmp_path / "console-receiver-failing.png")
        keep(tmp_path / "console-receiver-failing.png")

        Refusing.accept.set()  # it takes the next event: the alert clears, the sign goes
        gas_alarm(publisher, "gas-2")
        poll(refusing, lambda r: r["alert"] is None, timeout_s=30)
        page.wait_for_selector("#receivers", state="hidden", timeout=15_000)
        browser.close()
    collector.stop()


@pytest.mark.slow
def test_a_receiver_that_takes_events_again_gets_its_backlog_at_once(
    make_settings, run_collector, publisher, tmp_path: Path, receivers
) -> None:
    # Backoff of ten minutes and more: without this promise, gas-1's events would wait it out.
    settings, collector = start(
        make_settings, run_collector, tmp_path, receivers, retry_initial_s=600, retry_max_s=3600
    )
    api = httpx.Client(
        base_url=f"http://127.0.0.1:{settings.http.port}",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )

    def refusing() -> dict[str, Any]:
        return next(r for r in api.get("/api/receivers").json() if r["name"] == "refusing")

    gas_alarm(publisher, "gas-1")
    assert poll(refusing, lambda r: r["consecutive_failures"] >= 1)["pending"] >= 1
    Refusing.accept.set()
    gas_alarm(publisher, "gas-2")  # a new event, tried at once: it goes through

    def taken(device: str) -> list[str]:
        return [m["event"]["type"] for m in Refusing.accepted if m["alert"]["device"] == device]

    poll(lambda: taken("gas-1"), lambda t: len(t) >= 2)
    assert taken("gas-1")[:2] == ["opened", "dispatched"]  # in order, long before its backoff
    assert poll(refusing, lambda r: r["pending"] == 0)["pending"] == 0
    collector.stop()


def test_an_outbox_of_the_schema_before_gets_creation_times_that_give_nothing_up(
    tmp_path: Path,
) -> None:
    path = tmp_path / "alerts.db"
    SqliteAlertStore(path).close()
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:  # version 1
        db.execute("ALTER TABLE outbox DROP COLUMN created_ms")
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema'")
        db.execute(
            "INSERT INTO outbox (receiver, event_key, alert_id, seq, payload) "
            "VALUES ('orders', '1-1', 1, 1, x'7b7d')"
        )
    before_ms = time.time() * 1000
    store = SqliteAlertStore(path)
    try:
        (row,) = store.outbox.due(round(time.time() * 1000), "orders")
        backlog = store.outbox.backlogs()["orders"]
    finally:
        store.close()
    # Its age is unknown: it counts from the upgrade, not from 1970 (given up at once).
    assert row.created_ms >= before_ms and backlog.oldest_pending_ms == row.created_ms
    assert backlog.pending == 1 and backlog.dead == 0
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("2",)


def test_a_receiver_alert_left_open_by_an_earlier_run_clears_when_it_delivers() -> None:
    settings = ReceiverSettings(name="orders", url="http://127.0.0.1:9/hook")
    health = ReceiverHealth()
    watch = ReceiverWatch([(settings, health)])
    left_open = Alert(
        id=7,
        fingerprint=Fingerprint("orders", "failing_s", RECEIVER_FAILING_DETECTOR),
        state=State.OPEN,
        colour="orange",
        family="system",
        unit="_collector",
        hierarchy={},
        value=400.0,
        started_at_ms=1_000,
        updated_at_ms=1_000,
    )
    watch.resume([left_open])
    assert watch.update(1_500) == []  # nothing tried yet: not known to deliver
    health.record_failure(2_000, "HTTP 500: down", 500)
    assert watch.update(3_000) == []  # failing still: it stays as it is
    health.record_delivery(4_000)
    (cleared,) = watch.update(5_000)
    assert (cleared.kind, cleared.device, cleared.detector) == (
        "cleared",
        "orders",
        left_open.fingerprint.detector,
    )
    health.record_dead_letter(given_up=False)  # a 4xx: one event its people never see
    (lost,) = watch.update(6_000)
    assert (lost.kind, lost.colour) == ("raised", "red")
    (cleared,) = watch.update(7_000)  # delivering, nothing more lost
    assert cleared.kind == "cleared"
