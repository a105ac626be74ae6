"""Every dashboard query runs on a real InfluxDB filled by the simulator through the collector.

Grafana cannot run here, so the test does what Grafana does with a panel: it takes each
target's InfluxQL, substitutes the macros (``$timeFilter``, ``$__interval``) and the
template variables, and sends it to InfluxDB's ``/query``. Variables are resolved the
way Grafana resolves chained variables: each one's own query runs with the values chosen
above it.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from collector.config import InfluxSettings, parse_mqtt_url
from collector.detecting import detection_line
from collector.detection import DetectionEvent
from collector.influx import query_sync, rows
from collector.registry import Registry
from fieldtools.simulator import Anomaly, Simulator, SimulatorOptions, build_fleet
from tests.conftest import poll

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = sorted((ROOT / "dashboards").glob("*.json"))
REGISTRY = ROOT / "config" / "registry.example.toml"
PRESETS = ROOT / "config" / "rules.presets.toml"
MAY_BE_EMPTY = "May be empty"


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # inside collapsed rows


def substitute(query: str, variables: dict[str, str]) -> str:
    # What Grafana sends for "last 3 hours" on a narrow panel; rate panels need two
    # intervals of stats, so the fixture runs the collector for a few of them.
    query = query.replace("$timeFilter", "time > now() - 3h")
    query = query.replace("$__interval_ms", "5000").replace("$__interval", "5s")
    # longest names first: $unit must not eat the start of a longer name
    for name in sorted(variables, key=len, reverse=True):
        query = query.replace(f"${{{name}}}", variables[name]).replace(f"${name}", variables[name])
    assert "$" not in query.replace("$/", ""), f"unresolved macro in {query}"
    return query


def regex_value(value: str) -> str:
    """A tag value as Grafana puts it into a regex: escaped, and / escaped for InfluxQL."""
    return re.escape(value).replace("/", r"\/")


def test_the_committed_dashboards_are_what_the_generator_writes() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_dashboards.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert len(DASHBOARDS) == 7


def test_dashboards_use_the_current_schema_and_influxql_only() -> None:
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        assert board["schemaVersion"] >= 39 and board["uid"].startswith("smartunit-")
        for panel in panels(board):
            for target in panel.get("targets", []):
                assert target["rawQuery"] and target["query"].startswith("SELECT"), target
                assert target["datasource"] == {"type": "influxdb", "uid": "${datasource}"}
        names = [v["name"] for v in board["templating"]["list"]]
        assert names == ["datasource", "district", "street", "community", "grid", "unit"]


def test_alert_annotations_are_drawn_in_their_alerts_colour() -> None:
    for path in DASHBOARDS:
        annotations = json.loads(path.read_text())["annotations"]["list"]
        drawn = {}
        for annotation in annotations:
            (colour,) = re.findall(r"\"colour\" = '([a-z]+)'", annotation["query"])
            drawn[colour] = annotation["iconColor"]
        assert drawn == {c: c for c in ("green", "blue", "yellow", "orange", "red")}, path.name


@pytest.fixture
def filled(make_settings, run_collector, broker, publisher):
    """Two hours of simulated history plus some live seconds, stored by the collector."""
    settings = make_settings(
        REGISTRY,
        detection={"rules": [PRESETS]},
        ingest={"stats_interval_s": 0.5},
    )
    collector = run_collector(settings)
    registry = Registry.load(REGISTRY)
    fleet = build_fleet(registry, interval_scale=0.2)
    now = time.time()
    fleet[0].anomaly = Anomaly("device_offline", now + 1, now + 3)  # a last will
    simulator = Simulator(
        fleet,
        SimulatorOptions(endpoint=parse_mqtt_url(broker.url), duration_s=6.0, backfill_hours=2.0),
    )
    # rejected messages, for the rejections panel
    publisher.publish("smartunit/v1/camera/cam-x/data", "not json")
    publisher.publish("smartunit/v1/camera/cam-x/data", json.dumps({"people": -1}))
    started = time.monotonic()
    asyncio.run(simulator.run())
    time.sleep(max(2.0, 16.0 - (time.monotonic() - started)))  # three $__interval of stats
    yield settings
    collector.stop()
    for device in fleet:  # the broker is shared by the session: leave no retained status
        publisher.publish(device.status_topic, b"", retain=True)


@pytest.mark.slow
def test_every_panel_query_runs_and_returns_rows(filled) -> None:
    settings = filled
    failures: list[str] = []
    checked = 0
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        everything = {v["name"]: ".*" for v in board["templating"]["list"][1:]}
        chosen = resolve_variables(settings, board)
        for panel in panels(board):
            columns: set[str] = set()  # what the panel's queries return, for its transformations
            for target in panel.get("targets", []):
                for variables, need_rows in ((everything, True), (chosen, False)):
                    query = substitute(target["query"], variables)
                    try:
                        result = query_sync(settings.influx, query)
                    except Exception as exc:
                        failures.append(f"{path.name} / {panel['title']}: {exc}\n  {query}")
                        continue
                    checked += 1
                    found = [r for s in result for r in rows(s)]
                    if variables is everything:
                        columns |= column_names(result)
                    may_be_empty = panel.get("description", "").startswith(MAY_BE_EMPTY)
                    if need_rows and not found and not may_be_empty:
                        failures.append(f"{path.name} / {panel['title']}: no rows\n  {query}")
            missing = transformation_fields(panel) - columns
            if missing:
                failures.append(f"{path.name} / {panel['title']}: no column {sorted(missing)}")
        for annotation in board["annotations"]["list"]:
            query = substitute(annotation["query"], everything)
            try:
                query_sync(settings.influx, query)
            except Exception as exc:
                failures.append(f"{path.name} / annotation: {exc}")
    assert not failures, "\n".join(failures)
    assert checked > 60


def panel_targets(board_name: str, title: str) -> list[dict[str, Any]]:
    board = json.loads((ROOT / "dashboards" / board_name).read_text())
    found = [p for p in panels(board) if p["title"] == title]
    assert len(found) == 1, f"{board_name} has no single panel {title!r}"
    return list(found[0]["targets"])


def test_the_rejections_panel_counts_the_first_rejections_after_a_restart(
    make_settings, run_collector, publisher
) -> None:
    """The panel's own InfluxQL, on what two runs of a collector wrote, counts every
    rejection: those before the restart, the first one of a reason seen before it, and
    the first one of a reason never seen before."""
    settings = make_settings(REGISTRY, ingest={"stats_interval_s": 0.3})
    (target,) = panel_targets("devices.json", "Rejected messages by reason")
    query = substitute(target["query"], {})

    def counted() -> dict[str, float]:
        totals: dict[str, float] = {}
        for series in query_sync(settings.influx, query):
            reason = series["tags"]["reason"]
            values = [v for row in rows(series) for k, v in row.items() if k != "time"]
            totals[reason] = totals.get(reason, 0) + sum(v for v in values if v is not None)
        return totals

    data_topic = "smartunit/v1/camera/cam-x/data"
    first = run_collector(settings)
    for _ in range(3):
        publisher.publish(data_topic, "not json")
    assert poll(counted, {"bad_json": 3}.__eq__) == {"bad_json": 3}
    first.stop()

    second = run_collector(settings)
    publisher.publish(data_topic, "not json")
    publisher.publish("smartunit/v1/nonsense/cam-x/data", "{}")
    expected = {"bad_json": 4, "unknown_family": 1}
    assert poll(counted, expected.__eq__) == expected
    second.stop()


def test_the_hierarchy_variables_show_display_names_and_filter_by_id(
    make_settings, run_collector
) -> None:
    """Against what a collector wrote: each variable shows the registry's names (the unit's
    own, the places' from [places]) and its value is the id the panels filter by."""
    settings = make_settings(REGISTRY, ingest={"stats_interval_s": 0.3})
    run_collector(settings)
    board = json.loads((ROOT / "dashboards" / "city-overview.json").read_text())
    variables = {v["name"]: v for v in board["templating"]["list"][1:]}
    every = dict.fromkeys(variables, ".*")  # "All" above each variable

    def options(name: str, **chosen: str) -> dict[str, str]:
        return variable_options(settings.influx, variables[name], every | chosen)

    units = poll(lambda: options("unit"), bool)
    assert units.get("观前街广场") == "guanqian-square", units
    assert units["Pingjiang Road checkpoint"] == "pingjiang-checkpoint"
    districts = options("district")
    assert districts["姑苏区"] == "gusu"
    streets = options("street", district=regex_value(districts["姑苏区"]))
    assert streets["观前街道"] == "guanqian" and "扬子江国际化学工业园" not in streets
    assert options("grid")["G0107"] == "G0107"  # no display name: the id


def test_the_silent_devices_panel_follows_the_hierarchy(influxdb, database) -> None:
    """A silent device and a silent gateway, written as the collector writes them: the
    panel's query, filtered to a district, shows what is in that district only."""
    registry = Registry.load(REGISTRY)
    gateway = "gw-xh-01"
    behind = [d for d in registry.devices.values() if d.gateway == gateway]
    gateway_district = registry.units[behind[0].unit].hierarchy.district
    elsewhere = next(
        d
        for d in sorted(registry.devices.values(), key=lambda d: d.id)
        if registry.units[d.unit].hierarchy.district != gateway_district
    )
    now_ms = int(time.time() * 1000)

    def silent(device: str, family: str, unit: str) -> str:
        event = DetectionEvent(
            "silent", "silence", device, family, "", unit, "orange", "green", math.nan, now_ms
        )
        return detection_line(event, registry)

    influx = InfluxSettings(url=influxdb.url, database=database)
    query_sync(influx, f'CREATE DATABASE "{database}"')
    lines = [silent(gateway, "gateway", ""), silent(elsewhere.id, elsewhere.family, elsewhere.unit)]
    written = httpx.post(
        f"{influxdb.url}/write",
        params={"db": database, "precision": "ms"},
        content="\n".join(lines),
    )
    assert written.status_code == 204, written.text
    (target,) = panel_targets("devices.json", "Silent devices and gateways")
    everything = {level: ".*" for level in ("district", "street", "community", "grid", "unit")}

    def shown(**chosen: str) -> set[str]:
        variables = everything | {k: regex_value(v) for k, v in chosen.items()}
        result = query_sync(influx, substitute(target["query"], variables))
        return {row["device"] for series in result for row in rows(series)}

    assert shown() == {gateway, elsewhere.id}
    assert shown(district=gateway_district) == {gateway}
    assert shown(unit=behind[0].unit) == {gateway}  # all its devices are there
    other_district = registry.units[elsewhere.unit].hierarchy.district
    assert shown(district=other_district) == {elsewhere.id}


def column_names(result: list[dict[str, Any]]) -> set[str]:
    """The columns Grafana makes of a query's result: its fields, and its tags."""
    names: set[str] = set()
    for series in result:
        names |= set(series.get("columns", [])) | set(series.get("tags", {}))
    return names


def transformation_fields(panel: dict[str, Any]) -> set[str]:
    """Field names a panel's transformations need from its queries (what the fake Grafana
    of this test can check: that joins and sums name columns that exist)."""
    needed: set[str] = set()
    made: set[str] = set()
    for step in panel.get("transformations", []):
        options = step["options"]
        if step["id"] == "joinByField":
            needed.add(options["byField"])
        elif step["id"] == "calculateField":
            binary = options["binary"]
            needed |= {binary["left"], binary["right"]} - made
            made.add(options["alias"])
        elif step["id"] == "filterFieldsByName":
            needed |= set(options["include"]["names"]) - made
        elif step["id"] == "sortBy":
            needed |= {sort["field"] for sort in options["sort"]} - made
        else:
            raise AssertionError(f"transformation {step['id']} is not checked here")
    return needed


def resolve_variables(settings, board: dict[str, Any]) -> dict[str, str]:
    """Each variable's query with the values chosen above it; the first value is chosen."""
    chosen: dict[str, str] = {}
    for variable in board["templating"]["list"][1:]:
        options = variable_options(settings.influx, variable, chosen)
        assert options, f"variable {variable['name']} has no values: {variable['query']}"
        chosen[variable["name"]] = regex_value(sorted(options.values())[0])
    return chosen


def variable_options(influx, variable: dict[str, Any], chosen: dict[str, str]) -> dict[str, str]:
    """A query variable's options, text to value, as Grafana makes them: the query with the
    values chosen above it, each result through the variable's regex (named groups)."""
    query = substitute(variable["query"], chosen) if chosen else variable["query"]
    pattern = re.compile(variable["regex"].strip("/").replace("(?<", "(?P<"))
    options = {}
    for series in query_sync(influx, query):
        for row in rows(series):
            found = pattern.search(row["value"])
            if found:
                options[found["text"]] = found["value"]
    return options
