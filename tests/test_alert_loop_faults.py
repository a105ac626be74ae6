"""The alert loop on a running collector when it is hard: an incident whose alerts differ
in colour, a red that clears by itself before anyone saw it, devices the registry does not
know, and an alert store that cannot be written.

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
    def build(
        receiver: dict[str, Any],
        *,
        silence: SilenceSettings = SilenceSettings(enabled=False),  # noqa: B008 - frozen
        **alerts: Any,
    ) -> Any:
        registry = tmp_path / "registry.toml"
        registry.write_text(REGISTRY)
        rules = tmp_path / "rules.toml"
        rules.write_text(RULES)
        return make_settings(
            registry,
            detection={"rules": [rules], "statistical": None, "silence": silence},
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


@pytest.mark.slow
def test_a_red_that_clears_before_anyone_saw_it_goes_overdue_and_climbs(
    chem_park, run_collector, publisher
) -> None:
    """A leak that stopped by itself is still a leak nobody looked into: the alert keeps
    its acknowledgement deadline, shows overdue and climbs the hierarchy until someone
    acknowledges it."""
    settings = chem_park({}, ack_deadlines_s={"red": 2.0})
    collector = run_collector(settings)
    api = Api(settings.http.port)

    reading(publisher, "gas-1", "lel_pct", 55.0)  # red
    (gas,) = wait_for(lambda: api.alerts(colour="red"))
    reading(publisher, "gas-1", "lel_pct", 2.0)  # and normal again, before anyone acted
    recovered = wait_for(lambda: (a := api.alert(gas["id"]))["state"] == "recovered" and a)
    assert recovered["condition_active"] is False and recovered["acknowledged"] is False
    assert recovered["ack_due_at_ms"] == gas["started_at_ms"] + 2000

    def climbed_since_it_recovered() -> list[dict[str, Any]]:
        events = api.alert(gas["id"])["events"]
        (cleared,) = [e for e in events if e["type"] == "recovered"]
        return [e for e in events if e["type"] == "escalated" and e["seq"] > cleared["seq"]]

    (climbed, *_) = wait_for(climbed_since_it_recovered)
    assert climbed["state"] == "recovered" and climbed["actor"] == "system"
    overdue = api.alert(gas["id"])
    assert overdue["overdue"] is True and overdue["level"] != "grid"
    assert [a["id"] for a in api.alerts(state="recovered") if a["overdue"]] == [gas["id"]]
    # the work-order system hears of it at each level it reaches
    assert wait_for(
        lambda: [m for m in received("escalated", gas["id"]) if m["alert"]["state"] == "recovered"]
    )

    # once acknowledged nothing is awaited any more
    api.act("ack", gas["id"], "grid-officer-7", "vented; checking the valve")
    seen = api.alert(gas["id"])
    assert seen["ack_due_at_ms"] is None and seen["overdue"] is False
    collector.stop()


@pytest.mark.slow
def test_each_unregistered_device_is_an_incident_of_its_own(
    chem_park, run_collector, publisher
) -> None:
    """Devices the registry does not know share no place: acknowledging one device's
    alert leaves another's waiting, and the API lists them apart from the units."""
    settings = chem_park({})
    collector = run_collector(settings)
    api = Api(settings.http.port)

    def stray(device: str, count: int) -> list[dict[str, Any]]:
        def found() -> list[dict[str, Any]]:
            alerts = [a for a in api.alerts(unit="_unregistered") if a["device"] == device]
            return alerts if len(alerts) == count else []

        return wait_for(found)

    reading(publisher, "stray-1", "lel_pct", 55.0)
    (first,) = stray("stray-1", 1)
    reading(publisher, "stray-2", "lel_pct", 56.0)
    reading(publisher, "stray-2", "level_pct", 95.0)
    second = stray("stray-2", 2)
    assert all(a["unregistered"] for a in [first, *second])
    # one incident per device: stray-2's two alerts share one, apart from stray-1's
    assert {a["incident"] for a in second} == {min(a["id"] for a in second)}
    assert first["incident"] == first["id"] not in {a["incident"] for a in second}

    api.act("ack", first["id"], "grid-officer-7", "stray-1 checked")
    assert api.alert(first["id"])["acknowledged"] is True
    for alert in second:  # unrelated: nobody has seen them yet
        assert api.alert(alert["id"])["acknowledged"] is False
        assert api.alert(alert["id"])["state"] in ("open", "dispatched")

    # listed apart: not a unit of the tree, each device on its own
    units = api.client.get("/api/units").json()
    assert "_unregistered" not in {u["id"] for u in units}
    listed = api.client.get("/api/unregistered").json()
    assert [(d["device"], d["family"], d["colour"], d["active"]) for d in listed] == [
        ("stray-1", "chem", "red", 1),
        ("stray-2", "chem", "red", 2),
    ]
    assert [d["incidents"] for d in listed] == [[first["id"]], [second[0]["incident"]]]
    collector.stop()


@pytest.mark.slow
def test_a_silent_device_s_alert_carries_its_family(chem_park, run_collector, publisher) -> None:
    """The silence alert of a device goes to that family's people: from the registry
    when it knows the device, else from the readings the device sent."""
    silence = SilenceSettings(check_interval_s=0.2, timeout_s=2.0, allowance_s=0.0)
    settings = chem_park({}, silence=silence)
    collector = run_collector(settings)
    api = Api(settings.http.port)

    reading(publisher, "stray-1", "lel_pct", 3.0)  # a device the registry does not know
    (silent,) = wait_for(lambda: [a for a in api.alerts() if a["detector"] == "silence"])
    assert (silent["device"], silent["family"], silent["unit"]) == (
        "stray-1",
        "chem",
        "_unregistered",
    )
    (told,) = wait_for(lambda: [m for m in received("opened") if m["alert"]["device"] == "stray-1"])
    assert told["alert"]["family"] == "chem"
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


@pytest.mark.slow
def test_a_red_alarm_from_a_device_clock_ahead_escalates_on_the_services_deadline(
    chem_park, run_collector, publisher
) -> None:
    """A device whose clock runs four minutes ahead (within ingest.max_future_s, so its
    readings are stored as sent) must not delay the red alarm's escalation by four
    minutes: an alert's deadlines count from when the service learnt of it."""
    settings = chem_park({}, ack_deadlines_s={"red": 2.0})
    collector = run_collector(settings)
    api = Api(settings.http.port)

    ahead_s = 240.0
    assert ahead_s < settings.ingest.max_future_s
    sent_ms = round(time.time() * 1000)
    payload = {"ts": time.time() + ahead_s, "readings": {"lel_pct": 55.0}}
    publisher.publish("smartunit/v1/chem/gas-1/data", json.dumps(payload))
    (gas,) = wait_for(lambda: api.alerts(colour="red"))
    assert gas["started_at_ms"] < sent_ms + 30_000  # not in the device's future
    assert gas["ack_due_at_ms"] < sent_ms + 30_000 + 2000

    (escalated,) = wait_for(lambda: received("escalated", gas["id"]), 60)
    assert "grid -> community" in escalated["event"]["note"]
    collector.stop()
