"""The fire family end to end, on real servers: simulated fire devices publish to
Mosquitto, the collector stores their readings in InfluxDB, the shipped presets raise
the smoke and the low-water-pressure alarms, and the webhook receiver gets both, signed.

Nothing here is configured for fire beyond a registry listing the devices: the family,
its presets and its simulator profile come with the plug-in.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from collector.config import ReceiverSettings, parse_mqtt_url
from collector.registry import Registry
from fieldtools.simulator import Anomaly, Simulator, SimulatorOptions, build_fleet
from tests.conftest import influx_rows, poll
from tests.receivers import SECRET, WorkOrders

PRESETS = Path(__file__).resolve().parent.parent / "config" / "rules.presets.toml"
REGISTRY = """
[units.tower-a]
name = "Tower A"
kind = "residential"
[units.tower-a.hierarchy]
city = "suzhou"
district = "gusu"
street = "pingjiang"
community = "dudu"
grid = "G0412"

[units.pump-house]
name = "Dudu community fire pump house"
kind = "other"
[units.pump-house.hierarchy]
city = "suzhou"
district = "gusu"
street = "pingjiang"
community = "dudu"
grid = "G0412"

[devices.smoke-3f-01]
unit = "tower-a"
family = "fire"

[devices.hydrant-main-01]
unit = "pump-house"
family = "fire"
"""


class SimulatorThread:
    """The simulator on its own event loop, as ``smartunit simulate`` runs it."""

    def __init__(self, simulator: Simulator) -> None:
        self.simulator = simulator
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_until_complete, args=(simulator.run(),), daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.simulator.stop.set)
        self.thread.join(30)
        self.loop.close()


def delivered(detector: str) -> list[dict[str, Any]]:
    return [m for m in WorkOrders.processed if m["alert"]["detector"] == detector]


@pytest.mark.slow
def test_smoke_and_low_water_pressure_reach_the_webhook(
    make_settings,
    run_collector,
    broker,
    publisher,
    tmp_path: Path,
    receiver_url: str,
) -> None:
    registry_path = tmp_path / "registry.toml"
    registry_path.write_text(REGISTRY)
    settings = make_settings(
        registry_path,
        detection={"rules": [PRESETS], "statistical": None},
        alerts={
            "receivers": [
                ReceiverSettings(
                    name="fire-desk", url=receiver_url, secret=SECRET, families=["fire"]
                )
            ]
        },
    )
    collector = run_collector(settings)
    fleet = {d.id: d for d in build_fleet(Registry.load(registry_path), interval_scale=0.05)}
    assert {d.family for d in fleet.values()} == {"fire"}
    now = time.time()
    fleet["smoke-3f-01"].anomaly = Anomaly("smoke", now + 2, now + 600)
    # Well into a burst main: the pressure is down from the first reading on.
    fleet["hydrant-main-01"].anomaly = Anomaly("pressure_drop", now - 600, now + 600)
    simulator = SimulatorThread(
        Simulator(list(fleet.values()), SimulatorOptions(endpoint=parse_mqtt_url(broker.url)))
    )
    try:
        stored = poll(
            lambda: influx_rows(
                settings.influx,
                'SELECT "smoke", "temp_c", "pressure_kpa", "seq" FROM "fire" '
                "WHERE \"device\" = 'hydrant-main-01'",
            ),
            lambda rows: len(rows) >= 3,
            30.0,
        )
        assert all(row["pressure_kpa"] < 100.0 and row["smoke"] == 0 for row in stored), stored
        assert stored[0]["temp_c"] > 0

        smoke = poll(lambda: delivered("fire-smoke"), bool, 30.0, 0.1)
        alert = smoke[0]["alert"]
        assert (alert["device"], alert["family"], alert["colour"]) == (
            "smoke-3f-01",
            "fire",
            "red",
        )
        assert alert["unit"] == "tower-a" and smoke[0]["event"]["type"] == "opened"

        # The preset holds a low pressure for 10 s before it calls it (a pump start dips).
        pressure = poll(lambda: delivered("fire-water-pressure-low"), bool, 60.0, 0.1)
        alert = pressure[0]["alert"]
        assert (alert["device"], alert["colour"]) == ("hydrant-main-01", "red")
        assert alert["unit"] == "pump-house"
        assert WorkOrders.bad_signatures == 0
    finally:
        simulator.stop()
        collector.stop()
        for device in fleet.values():  # the broker is shared by the session
            publisher.publish(device.status_topic, b"", retain=True)
