"""The alert loop on a running collector when it is hard: an incident whose alerts differ
in colour, and an alert store that cannot be written.

Real Mosquitto, InfluxDB, collector and a signature-checking webhook receiver; the test
only publishes readings and watches the receiver, the HTTP API and the database file.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from collector.config import ReceiverSettings, SilenceSettings
from tests.conftest import poll
from tests.receivers import SECRET, WorkOrders
from tests.test_alerts_e2e import TOKEN, Api
from tests.test_detection_e2e import REGISTRY

ALERT_STORE_DETECTOR = "alert-store-unwritable"  # the operator alert, by name
RULES = """
[[rules]]
name = "tank-high"
family = "chem"
quantity = "level_pct"
detector = "threshold"
params = { levels = { yellow = 80.0 }, clear = { yellow = 70.0 } }

[[rules]]
name = "combustible-gas"
family = "chem"
quantity = "lel_pct"
detector = "threshold"
params = { levels = { orange = 25.0, red = 50.0 }, clear = { orange = 20.0, red = 45.0 } }
"""


def wait_for(predicate: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    return poll(predicate, bool, timeout_s, 0.05)


@pytest.fixture
def chem_park(make_settings, tmp_path: Path, receiver_url: str) -> Callable[..., Any]:
    def build(receiver: dict[str, Any], **alerts: Any) -> Any:
        registry = tmp_path / "registry.toml"
        registry.write_text(REGISTRY)
        rules = tmp_path / "rules.toml"
        rules.write_text(RULES)
        return make_settings(
            registry,
            detection={
                "rules": [rules],
                "statistical": None,
                "silence": SilenceSettings(enabled=False),
            },
            alerts={
                "verify_interval_s": 0.2,
                "receivers": [
                    ReceiverSettings(name="desk", url=receiver_url, secret=SECRET, **receiver)
                ],
                **alerts,
            },
            http={"tokens": {"work-orders": SecretStr(TOKEN)}},
        )

    return build


def reading(publisher: Any, device: str, quantity: str, value: float) -> None:
    payload = {"ts": time.time(), "readings": {quantity: value}}
    publisher.publish(f"smartunit/v1/chem/{device}/data", json.dumps(payload))


def received(event_type: str, alert_id: int | None = None) -> list[dict[str, Any]]:
    return [
        m
        for m in WorkOrders.processed
        if m["event"]["type"] == event_type and alert_id in (None, m["alert"]["id"])
    ]


@pytest.mark.slow
def test_a_red_alarm_in_a_yellow_incident_reaches_an_orange_only_receiver(
    chem_park, run_collector, publisher
) -> None:
    settings = chem_park({"min_colour": "orange"}, ack_deadlines_s={"red": 1.0, "yellow": 3600.0})
    collector = run_collector(settings)
    api = Api(settings.http.port)

    reading(publisher, "tank-1", "level_pct", 90.0)  # yellow: the incident starts
    (tank,) = wait_for(lambda: api.alerts(colour="yellow"))
    reading(publisher, "gas-1", "lel_pct", 55.0)  # red, same unit: it joins
    (gas,) = wait_for(lambda: api.alerts(colour="red"))
    assert gas["incident"] == tank["id"]

    # the orange-only desk gets the incident now that it is red: signed, with its colour
    (joined,) = wait_for(lambda: received("incident_joined", tank["id"]))
    assert joined["alert"]["incident_colour"] == "red"
    assert f"alert {gas['id']} (gas-1 lel_pct) joined, red" in joined["event"]["note"]
    assert WorkOrders.bad_signatures == 0

    # the red alarm escalates on its own one-second deadline; the yellow one waits an hour
    (escalated,) = wait_for(lambda: received("incident_escalated", tank["id"]))
    assert f"alert {gas['id']}" in escalated["event"]["note"]
    assert "grid -> community" in escalated["event"]["note"]
    assert api.alert(gas["id"])["level"] != "grid"
    assert api.alert(tank["id"])["level"] == "grid"
    # the yellow opening alone never reached the orange desk
    assert received("opened") == []
    collector.stop()


def chattr(flag: str, *paths: Path) -> None:
    subprocess.run(["chattr", flag, *map(str, paths)], check=True, capture_output=True)


@pytest.fixture
def immutable(tmp_path: Path) -> Iterator[Callable[[list[Path]], None]]:
    """Make files unwritable even for root (their file system's immutable flag)."""
    made: list[Path] = []

    def make(paths: list[Path]) -> None:
        try:
            chattr("+i", *paths)
        except (OSError, subprocess.CalledProcessError) as exc:
            pytest.skip(f"cannot set the immutable flag here: {exc}")
        made.extend(paths)

    yield make
    for path in made:
        subprocess.run(["chattr", "-i", str(path)], check=False)


@pytest.mark.slow
def test_an_alarm_raised_while_the_alert_store_is_unwritable_is_stored_and_sent_later(
    chem_park, run_collector, publisher, immutable
) -> None:
    settings = chem_park({})
    collector = run_collector(settings)
    api = Api(settings.http.port)
    database = settings.data_dir / settings.alerts.database
    files = [database, database.with_name(database.name + "-wal")]
    assert all(f.exists() for f in files)

    immutable(files)
    reading(publisher, "gas-1", "lel_pct", 55.0)
    health = wait_for(lambda: (r := api.client.get("/healthz")).status_code == 503 and r)
    assert "alert store cannot be written" in health.json()["detail"]
    metrics = api.client.get("/metrics").text
    assert "smartunit_alert_detections_waiting 1.0" in metrics, metrics
    assert api.alerts() == []  # not stored: not an alert yet, and not forgotten either

    chattr("-i", *files)
    (gas,) = wait_for(lambda: api.alerts(colour="red", family="chem"))
    assert gas["device"] == "gas-1" and gas["value"] == 55.0
    assert wait_for(lambda: received("opened", gas["id"]))
    # the operator alert: raised through the store once it took writes again, and sent
    (operator,) = wait_for(
        lambda: [a for a in api.alerts() if a["detector"] == ALERT_STORE_DETECTOR]
    )
    assert operator["colour"] == "red" and operator["family"] == "system"
    assert wait_for(lambda: received("opened", operator["id"]))
    assert wait_for(lambda: api.client.get("/healthz").status_code == 200)
    assert WorkOrders.bad_signatures == 0
    collector.stop()
