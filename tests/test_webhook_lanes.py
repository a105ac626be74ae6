"""Receivers are independent: one that answers a byte at a time delays nobody else.

A running collector has two receivers: a work-order system that answers at once, and one
that accepts every request and then trickles its answer a byte at a time, faster than any
per-read timeout but never finishing. Gas alarms raised one after another over MQTT must
each reach the first receiver while the second is still stalled.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from collector.config import ReceiverSettings
from tests.conftest import poll
from tests.receivers import QuietHandler, WorkOrders, serve

DEVICES = [f"gas-{i}" for i in range(1, 5)]
REGISTRY = "\n".join(
    f'[units.plant-{d}]\nkind = "chem_enterprise"\n'
    f'hierarchy = {{ city = "suzhou", district = "zjg", street = "park", community = "e", '
    f'grid = "G-{d}" }}\n[devices.{d}]\nunit = "plant-{d}"\nfamily = "chem"\n'
    for d in DEVICES  # one unit each: every alarm is its own incident
)
GAS_RULE = """
[[rules]]
name = "combustible-gas"
family = "chem"
quantity = "lel_pct"
detector = "threshold"
[rules.params]
levels = { orange = 25.0, red = 50.0 }
clear = { orange = 20.0, red = 45.0 }
for_s = 1.0
"""
TRICKLE_EVERY_S = 0.5
SLOW_TIMEOUT_S = 2.0  # several trickled bytes fit in it: a per-read timeout never trips


class Trickler(QuietHandler):
    """Takes the request, then sends its answer's head one byte per TRICKLE_EVERY_S."""

    stop = threading.Event()
    requests = 0

    def do_POST(self) -> None:
        type(self).requests += 1
        self.rfile.read(int(self.headers["Content-Length"]))
        head = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"z" * 100_000
        try:
            for byte in head:
                if self.stop.wait(TRICKLE_EVERY_S):
                    return
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
        except OSError:  # the sender gave up on us
            return


@pytest.fixture
def receivers() -> Iterator[tuple[str, str]]:
    Trickler.stop.clear()
    Trickler.requests = 0
    WorkOrders.reset(secret=None)
    slow, fast = serve(Trickler), serve(WorkOrders)
    yield slow.url, fast.url
    Trickler.stop.set()
    slow.stop()
    fast.stop()


def gas_plant(
    make_settings: Any,
    tmp_path: Path,
    receivers: list[ReceiverSettings],
    *,
    http: dict[str, Any] | None = None,
    **alerts: Any,
) -> Any:
    """Settings for the gas sensors of ``REGISTRY`` under ``GAS_RULE``, alerting ``receivers``."""
    registry = tmp_path / "registry.toml"
    registry.write_text(REGISTRY)
    rules = tmp_path / "rules.toml"
    rules.write_text(GAS_RULE)
    return make_settings(
        registry,
        detection={"rules": [rules], "statistical": None},
        alerts={"receivers": receivers, **alerts},
        http=http or {},
    )


def gas_alarm(publisher: Any, device: str) -> None:
    now = time.time()
    for ts in (now - 1.5, now):  # 60 % LEL held past the rule's 1 s: level 2
        publisher.publish(
            f"smartunit/v1/chem/{device}/data",
            json.dumps({"ts": ts, "readings": {"lel_pct": 60.0}}),
        )


def events_of(device: str) -> list[dict[str, Any]]:
    return [m["event"] for m in WorkOrders.processed if m["alert"]["device"] == device]


@pytest.mark.slow
def test_a_trickling_receiver_delays_no_other_receiver(
    make_settings, run_collector, publisher, tmp_path: Path, receivers: tuple[str, str]
) -> None:
    slow_url, fast_url = receivers
    settings = gas_plant(
        make_settings,
        tmp_path,
        [
            ReceiverSettings(name="slow", url=slow_url, timeout_s=SLOW_TIMEOUT_S),
            ReceiverSettings(name="work-orders", url=fast_url),
        ],
        retry_initial_s=1.0,
        retry_max_s=4.0,
    )
    collector = run_collector(settings)

    for device in DEVICES:  # one alarm after another, each once the last one went out
        gas_alarm(publisher, device)
        types = poll(lambda d=device: [e["type"] for e in events_of(d)], lambda t: len(t) >= 2)
        assert types == ["opened", "dispatched"], (device, types, Trickler.requests)

    # Every event came while the trickler was stalled: it took requests, finished none.
    assert Trickler.requests >= 1
    database = settings.data_dir / settings.alerts.database
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        slow = db.execute("SELECT status FROM outbox WHERE receiver = 'slow'").fetchall()
    assert len(slow) >= len(DEVICES) and {status for (status,) in slow} == {"pending"}

    def slow_errors() -> list[str]:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
            rows = db.execute("SELECT last_error FROM outbox WHERE receiver = 'slow'")
            return [error for (error,) in rows.fetchall()]

    # Its requests are given up on at their total deadline and retried, although a byte
    # came every TRICKLE_EVERY_S: the collector is not stuck on them either.
    errors = poll(slow_errors, any)
    assert f"no complete answer within {SLOW_TIMEOUT_S:g} s" in errors, errors
    delays = []
    for arrived, message in zip(WorkOrders.arrived_at, WorkOrders.processed, strict=True):
        at = datetime.fromisoformat(message["event"]["at"].replace("Z", "+00:00"))
        delays.append(arrived - at.timestamp())
    for device in DEVICES:  # in order per alert, each once
        assert [e["seq"] for e in events_of(device)] == [1, 2]
    print(
        f"\nper-event delay to the other receiver, {len(delays)} events: "
        f"max {max(delays):.3f} s, mean {sum(delays) / len(delays):.3f} s; "
        f"trickler requests {Trickler.requests}"
    )
    collector.stop()
