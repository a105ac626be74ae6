"""The whole loop on a running collector: detect, dispatch, handle over the API, verify.

A sensor thread reports every 0.2 s in device time, as a real gas detector does; the
test only changes what it measures. Everything the dispatcher and the operators do goes
through the webhook receiver and the callback API, never through the collector's
objects.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from collector.config import ReceiverSettings, SilenceSettings
from tests.conftest import poll
from tests.receivers import SECRET, WorkOrders
from tests.test_detection_e2e import PRESETS, REGISTRY, wait_rows

TOKEN = "tok-work-orders"


def wait_for(predicate: Callable[[], Any], timeout_s: float = 20.0) -> Any:
    return poll(predicate, bool, timeout_s, 0.05)


class Sensor:
    """A gas detector on the bus: reports its current value every ``period_s``."""

    def __init__(self, publisher, topic: str, quantity: str, period_s: float = 0.2) -> None:
        self.value = 0.0
        self._publisher, self._topic, self._quantity = publisher, topic, quantity
        self._period_s = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        seq = 0
        while not self._stop.wait(self._period_s):
            seq += 1
            payload = {"ts": time.time(), "seq": seq, "readings": {self._quantity: self.value}}
            self._publisher.publish(self._topic, json.dumps(payload))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def gas_sensor(publisher) -> Iterator[Sensor]:
    sensor = Sensor(publisher, "smartunit/v1/chem/gas-1/data", "lel_pct")
    yield sensor
    sensor.close()


class Api:
    def __init__(self, port: int) -> None:
        self.client = httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=10,
        )
        assert wait_for(self._up, timeout_s=10)

    def _up(self) -> bool:
        try:
            return self.client.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        response = self.client.get("/api/alerts", params=filters)
        assert response.status_code == 200, response.text
        return response.json()

    def alert(self, alert_id: int) -> dict[str, Any]:
        response = self.client.get(f"/api/alerts/{alert_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def act(self, action: str, alert_id: int, actor: str, note: str) -> dict[str, Any]:
        response = self.client.post(
            f"/api/alerts/{alert_id}/{action}", json={"actor": actor, "note": note}
        )
        assert response.status_code == 200, response.text
        return response.json()


@pytest.mark.slow
def test_a_gas_alarm_runs_the_loop_through_the_api_reopens_and_closes_verified(
    make_settings,
    run_collector,
    gas_sensor: Sensor,
    tmp_path: Path,
    receiver_url: str,
) -> None:
    registry = tmp_path / "registry.toml"
    registry.write_text(REGISTRY)
    # The GB/T level rule as shipped, its duration compressed through configuration.
    presets = PRESETS.read_text()
    gas_rule = presets[presets.index("[[rules]]") : presets.index("# A combustible gas reading")]
    assert "for_s = 5.0" in gas_rule
    rules = tmp_path / "rules.toml"
    rules.write_text(gas_rule.replace("for_s = 5.0", "for_s = 1.0"))
    settings = make_settings(
        registry,
        detection={
            "rules": [rules],
            "statistical": None,  # only the rule: this test is about the loop
            "silence": SilenceSettings(timeout_s=60.0, check_interval_s=0.5),
        },
        alerts={
            "verify_window_s": 2.0,
            "verify_interval_s": 0.2,
            "receivers": [ReceiverSettings(name="work-orders", url=receiver_url, secret=SECRET)],
        },
        http={"tokens": {"work-orders": SecretStr(TOKEN)}},
    )
    collector = run_collector(settings)
    api = Api(settings.http.port)

    # 1. detect: 55 % LEL held for the rule's duration is a red (level 2) alarm
    gas_sensor.value = 3
    time.sleep(0.5)
    gas_sensor.value = 55
    (alert,) = wait_for(lambda: api.alerts(colour="red"))
    assert alert["device"] == "gas-1" and alert["detector"] == "combustible-gas"
    assert alert["threshold"] == 50.0 and alert["value"] == 55.0  # level 2 of GB/T 50493
    alert_id = alert["id"]
    assert api.alerts(hierarchy="suzhou/zjg/park") and not api.alerts(hierarchy="suzhou/xyz")

    # 2. dispatch: the work-order system got it, signed
    def delivered() -> list[str]:
        return [m["event"]["type"] for m in WorkOrders.processed if m["alert"]["id"] == alert_id]

    assert wait_for(lambda: "opened" in delivered())
    assert wait_for(lambda: api.alert(alert_id)["state"] == "dispatched")

    # 3. handle: acknowledged through the API, the leak stopped, resolved through the API
    acked = api.act("ack", alert_id, "grid-officer-7", "on my way")
    assert acked["alert"]["state"] == "acknowledged"
    assert api.act("ack", alert_id, "grid-officer-7", "again")["events"] == []  # idempotent
    gas_sensor.value = 10  # below every clear value
    assert wait_for(lambda: not api.alert(alert_id)["condition_active"])
    assert api.act("resolve", alert_id, "grid-officer-7", "valve closed")["alert"]["state"] == (
        "resolved"
    )

    # 4. verify: the gas comes back inside the verification window: reopened
    gas_sensor.value = 55
    assert wait_for(lambda: "reopened" in [e["type"] for e in api.alert(alert_id)["events"]])
    # a reopened alert goes back to the work-order system
    assert wait_for(lambda: api.alert(alert_id)["state"] == "dispatched")
    assert not api.alert(alert_id)["acknowledged"]  # it needs someone again
    api.act("ack", alert_id, "grid-officer-7", "back on site")
    api.act("comment", alert_id, "grid-officer-7", "second valve was open too")
    gas_sensor.value = 4
    assert wait_for(lambda: not api.alert(alert_id)["condition_active"])
    api.act("resolve", alert_id, "grid-officer-7", "both valves closed")

    # 5. close: normal for the window with the device alive
    final = wait_for(lambda: (a := api.alert(alert_id))["state"] == "closed" and a)
    assert final, api.alert(alert_id)
    types = [e["type"] for e in final["events"]]
    assert types[0] == "opened" and types[-2:] == ["resolved", "closed"]
    expected_order = [
        "opened",
        "dispatched",
        "acknowledged",
        "condition_cleared",
        "resolved",
        "reopened",
        "dispatched",  # the work order is opened again
        "acknowledged",
        "commented",
        "condition_cleared",
        "resolved",
        "closed",
    ]
    assert [t for t in types if t in expected_order] == expected_order, types
    assert all(e["actor"].startswith("work-orders:") for e in final["events"][2:3])

    # The audit trail is in InfluxDB too, for the dashboards' annotations.
    stored = wait_rows(
        settings.influx,
        f'SELECT * FROM "alert_events" WHERE "alert_id" = {alert_id} GROUP BY *',
        len(types),
    )
    assert sorted(r["seq"] for r in stored) == list(range(1, len(types) + 1))
    assert {r["grid"] for r in stored} == {"CP-01"}
    assert any(r["note"] == "both valves closed" for r in stored)

    # The work-order system got the whole loop, signed, in order, each event once.
    assert wait_for(lambda: "closed" in delivered())
    assert delivered() == types
    assert WorkOrders.bad_signatures == 0
    collector.stop()


@pytest.mark.slow
def test_the_alert_store_is_where_its_url_says(
    make_settings, run_collector, gas_sensor: Sensor, tmp_path: Path
) -> None:
    registry = tmp_path / "registry.toml"
    registry.write_text(REGISTRY)
    presets = PRESETS.read_text()
    rules = tmp_path / "rules.toml"
    rules.write_text(presets[presets.index("[[rules]]") : presets.index("# A combustible gas")])
    settings = make_settings(
        registry,
        detection={"rules": [rules], "statistical": None},
        alerts={"store": "sqlite:///book/alerts.db"},
        http={"tokens": {"work-orders": SecretStr(TOKEN)}},
    )
    run_collector(settings)
    api = Api(settings.http.port)
    gas_sensor.value = 55
    (alert,) = wait_for(lambda: api.alerts(colour="red"), timeout_s=30)

    chosen = settings.data_dir / "book" / "alerts.db"
    with contextlib.closing(sqlite3.connect(f"file:{chosen}?mode=ro", uri=True)) as db:
        stored = db.execute("SELECT device, colour FROM alerts WHERE id = ?", (alert["id"],))
        assert stored.fetchall() == [("gas-1", "red")]
    assert not (settings.data_dir / settings.alerts.database).exists()
