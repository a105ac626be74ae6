"""SmartUnit's Alertmanager format against a real Alertmanager receiver: Alerta.

Alerta (``alerta-server`` from PyPI, in its own virtualenv ``.venv-alerta`` that
``make alerta`` builds from tests/alerta-requirements.txt) runs with its default
configuration on a PostgreSQL server of Debian's package, both on free loopback ports.
The collector sends to Alerta's Prometheus webhook exactly what it sends to any
Alertmanager-format receiver.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from collector.config import ReceiverSettings, SilenceSettings
from fieldtools.localservices import free_port, spawn, stop_process
from tests.conftest import poll
from tests.postgres import PostgresServer
from tests.test_alerts_e2e import TOKEN, Api, Sensor
from tests.test_detection_e2e import PRESETS

ROOT = Path(__file__).resolve().parent.parent
ALERTAD = ROOT / ".venv-alerta" / "bin" / "alertad"
REGISTRY = """
[units.xinghua]
kind = "chem_enterprise"
hierarchy = { city = "suzhou", district = "zjg", street = "park", community = "e", grid = "CP-01" }

[devices.gas-1]
unit = "xinghua"
family = "chem"

[devices.gas-2]
unit = "xinghua"
family = "chem"
"""


def _wait(ready: Any, proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if ready():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready within 60 s:\n{log.read_text()[-3000:]}")


@dataclass
class Alerta:
    url: str

    def alerts(self, **query: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/alerts", params=query, timeout=10)
        assert response.status_code == 200, response.text
        return list(response.json()["alerts"])


@pytest.fixture(scope="module")
def alerta(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alerta]:
    """Alerta with its default configuration: only where its database is is set."""
    if not ALERTAD.exists():
        pytest.skip(f"Alerta is not installed ({ALERTAD}): run 'make alerta' (make test does)")
    log = tmp_path_factory.mktemp("alerta") / "alertad.log"
    port = free_port()
    env = {"PATH": os.environ.get("PATH", ""), "DATABASE_URL": postgres.url}
    argv = [str(ALERTAD), "run", "--host", "127.0.0.1", "--port", str(port)]
    proc = spawn(argv, log_path=log, env=env, cwd=log.parent)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/management/healthcheck", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        _wait(healthy, proc, "alertad", log)
        yield Alerta(url)
    finally:
        stop_process(proc)


@pytest.mark.slow
def test_a_red_gas_alarm_on_two_devices_is_two_alerts_in_alerta_until_resolved(
    make_settings, run_collector, publisher, alerta: Alerta, tmp_path: Path
) -> None:
    registry = tmp_path / "registry.toml"
    registry.write_text(REGISTRY)
    presets = PRESETS.read_text()
    gas_rule = presets[presets.index("[[rules]]") : presets.index("# A combustible gas reading")]
    rules = tmp_path / "rules.toml"
    rules.write_text(gas_rule.replace("for_s = 5.0", "for_s = 1.0"))
    receiver = ReceiverSettings(
        name="alerta",
        url=f"{alerta.url}/webhooks/prometheus",
        format="alertmanager",  # the default severity table, no labels added
        group_incidents=False,  # one Alerta alert per device
    )
    settings = make_settings(
        registry,
        detection={
            "rules": [rules],
            "statistical": None,
            "silence": SilenceSettings(timeout_s=60.0, check_interval_s=0.5),
        },
        alerts={"verify_window_s": 600.0, "receivers": [receiver]},
        http={"tokens": {"alerta": SecretStr(TOKEN)}},
    )
    run_collector(settings)
    api = Api(settings.http.port)
    sensors = [
        Sensor(publisher, f"smartunit/v1/chem/{d}/data", "lel_pct") for d in ("gas-1", "gas-2")
    ]
    try:
        for sensor in sensors:
            sensor.value = 3
        time.sleep(0.5)
        for sensor in sensors:
            sensor.value = 55  # level 2 of GB/T 50493: red

        def in_alerta(status: str) -> list[dict[str, Any]]:
            found = poll(
                lambda: alerta.alerts(service="xinghua", status=status), lambda a: len(a) >= 2, 60
            )
            return sorted(found, key=lambda a: a["resource"])

        firing = in_alerta("open")
        assert [a["resource"] for a in firing] == ["gas-1", "gas-2"]
        for alert in firing:
            assert alert["severity"] == "critical"  # red, in Alerta's vocabulary
            assert alert["event"] == "combustible-gas:lel_pct"
            assert alert["environment"] == "Production" and alert["group"] == "chem"
            assert alert["value"] == "55.0"
            assert alert["attributes"]["threshold"] == "50.0"
            assert "colour=red" in alert["tags"]

        ours = sorted(api.alerts(colour="red"), key=lambda a: a["device"])
        assert [a["device"] for a in ours] == ["gas-1", "gas-2"]
        for sensor in sensors:
            sensor.value = 4  # normal again by itself: nobody has handled it yet

        def told_cleared() -> list[dict[str, Any]]:
            found = alerta.alerts(service="xinghua")
            return [a for a in found if a["attributes"].get("condition") == "cleared"]

        recovered = poll(told_cleared, lambda a: len(a) == 2, 60)
        assert len(recovered) == 2, alerta.alerts(service="xinghua")
        # Alerta heard that the readings are normal again, and the alarms still stand.
        assert [(a["status"], a["severity"]) for a in recovered] == [("open", "critical")] * 2

        leader = min(a["id"] for a in ours)  # resolving the incident resolves both
        api.act("resolve", leader, "grid-officer-7", "valve closed")
        closed = in_alerta("closed")
        assert [a["resource"] for a in closed] == ["gas-1", "gas-2"]
        assert all(a["severity"] == "normal" for a in closed)
        assert all(a["attributes"]["state"] == "resolved" for a in closed)
        assert alerta.alerts(service="xinghua", status="open") == []
    finally:
        for sensor in sensors:
            sensor.close()
