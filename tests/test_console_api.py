"""What the console's responsibility columns and map read from the API and the registry:
the peak of an alert that has since recovered, who acknowledged it, display names of
places, and unit coordinates, contacts and runbooks."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.alerts.lifecycle import AlertBook
from collector.alerts.store import SqliteAlertStore
from collector.api import ApiContext
from collector.detection import DetectionEvent
from collector.errors import ConfigError
from collector.registry import Registry

MIN = 60_000


def gas(
    kind: str, colour: str, at_ms: int, value: float, threshold: float | None
) -> DetectionEvent:
    return DetectionEvent(
        kind,  # type: ignore[arg-type]
        "combustible-gas",
        "gas-1",
        "chem",
        "lel_pct",
        "xinghua",
        colour,
        "green",
        value,
        at_ms,
        threshold=threshold,
    )


def test_a_recovered_red_shows_its_peak_and_who_handles_it(tmp_path: Path) -> None:
    book = AlertBook(SqliteAlertStore(tmp_path / "alerts.db"), verify_window_s=300)
    (opened,) = book.on_detection(gas("raised", "orange", 0, 30.0, 25.0))
    book.on_detection(gas("changed", "red", MIN, 55.0, 50.0))
    book.on_detection(gas("cleared", "green", 2 * MIN, 20.0, None))
    book.on_detection(gas("raised", "red", 3 * MIN, 58.0, 50.0))  # higher: the peak
    book.on_detection(gas("cleared", "green", 4 * MIN, 10.0, None))
    book.on_detection(gas("raised", "red", 5 * MIN, 52.0, 50.0))  # lower: not the peak
    book.on_detection(gas("cleared", "green", 6 * MIN, 1.2, None))
    book.acknowledge(opened.alert_id, actor="console:值班员 李", now_ms=7 * MIN)

    alert = book.get(opened.alert_id)
    assert alert is not None
    shown = ApiContext(book=book, tokens={}).alert_json(alert)
    assert shown["value"] == 1.2 and shown["threshold"] == 50.0
    assert shown["peak"] == 58.0  # what it was at its height, not just where it ended
    assert shown["acknowledged_by"] == "console:值班员 李"


def test_the_registry_gives_places_names_and_units_coordinates() -> None:
    registry = Registry.from_mapping(
        {
            "places": {"gusu": "姑苏区"},
            "units": {
                "guanqian-square": {
                    "name": "观前街广场",
                    "hierarchy": {
                        "city": "suzhou",
                        "district": "gusu",
                        "street": "gq",
                        "community": "gq",
                        "grid": "G7",
                    },
                    "lat": 31.311,
                    "lon": 120.624,
                    "contact": "0512-0000",
                    "runbook": "https://runbooks.example/crowd",
                }
            },
        }
    )
    unit = registry.units["guanqian-square"]
    assert (unit.lat, unit.lon, unit.contact) == (31.311, 120.624, "0512-0000")
    assert registry.places == {"gusu": "姑苏区"}
    with pytest.raises(ConfigError, match="lat"):
        Registry.from_mapping(
            {"units": {"u": {"hierarchy": unit.hierarchy.model_dump(), "lat": 91.0}}}
        )
