#!/usr/bin/env python3
"""Write the Grafana dashboards in dashboards/*.json from the definitions below.

Dashboards are code here so that they share one hierarchy filter, one set of
template variables and the same annotation queries; the JSON files are what Grafana imports
(provisioning, ``smartunit dashboards push``) and are committed. tests/test_dashboards.py
checks that the files are what this script writes, and runs every query against a real
InfluxDB filled by the simulator.

InfluxQL only (no Flux), so the dashboards work on InfluxDB 1.x, 2.x (DBRP) and 3.x.
A panel whose description starts with "May be empty" may return no rows on a healthy
system (no silent device, no detection in the range); every other panel must return rows.

Usage: scripts/gen_dashboards.py [--check]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from collector.families import FAMILIES

OUT = Path(__file__).resolve().parent.parent / "dashboards"
TARGET_REFS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
DATASOURCE = {"type": "influxdb", "uid": "${datasource}"}
LEVELS = ["district", "street", "community", "grid", "unit"]
COLOUR_STEPS = [  # the five-colour warning, level 0..4
    {"color": "green", "value": None},
    {"color": "blue", "value": 1},
    {"color": "yellow", "value": 2},
    {"color": "orange", "value": 3},
    {"color": "red", "value": 4},
]
WARNING_COLOURS = ["green", "blue", "yellow", "orange", "red"]  # level 0..4
LEVEL_MAPPINGS = [
    {
        "type": "value",
        "options": {
            str(level): {"text": name, "color": name, "index": level}
            for level, name in enumerate(WARNING_COLOURS)
        },
    }
]
MAY_BE_EMPTY = "May be empty"
# Grafana (7.4 on) takes an option's text and value from these named groups.
LABEL_REGEX = "/^(?<text>[^|]*)\\|(?<value>.*)$/"
SAFE_CAPACITY_KNOWN = '"safe_capacity" > 0'


def steps(*levels: tuple[str, float]) -> list[dict[str, Any]]:
    """Threshold steps: green below the first, then each colour from its value on."""
    return [{"color": "green", "value": None}] + [
        {"color": colour, "value": value} for colour, value in levels
    ]


PARKING_STEPS = steps(("blue", 90), ("yellow", 98))  # the parking-occupancy preset

# -- query pieces -------------------------------------------------------------------------


def where(*extra: str, upto: str = "unit") -> str:
    """$timeFilter plus the hierarchy filter, from district down to ``upto``."""
    levels = LEVELS[: LEVELS.index(upto) + 1]
    parts = ["$timeFilter", *(f'"{k}" =~ /^${k}$/' for k in levels), *extra]
    return " AND ".join(parts)


def last_per_unit(*fields: str, extra: str = "", by_time: bool = False) -> str:
    """The latest unit_status snapshot of each unit: the base of every overview panel."""
    selected = ", ".join(f'last("{f}") AS "{f}"' for f in fields)
    group = 'time($__interval), "unit"' if by_time else '"unit"'
    tags = ', "district", "street", "grid"' if not by_time else ""
    filters = (extra,) if extra else ()
    return f'SELECT {selected} FROM "unit_status" WHERE {where(*filters)} GROUP BY {group}{tags}'


# -- panels -------------------------------------------------------------------------------


def target(query: str, ref: str = "A", *, table: bool = False, alias: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {
        "refId": ref,
        "datasource": DATASOURCE,
        "query": query,
        "rawQuery": True,
        "resultFormat": "table" if table else "time_series",
    }
    if alias:
        out["alias"] = alias
    return out


def panel(
    kind: str,
    title: str,
    queries: list[dict[str, Any]],
    *,
    w: int = 12,
    h: int = 8,
    unit: str = "short",
    description: str = "",
    thresholds: list[dict[str, Any]] | None = None,
    mappings: list[dict[str, Any]] | None = None,
    bands: bool = False,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": unit}
    if thresholds:
        defaults["thresholds"] = {"mode": "absolute", "steps": thresholds}
        defaults["color"] = {"mode": "thresholds"}
    if mappings:
        defaults["mappings"] = mappings
    if bands:  # the level bands drawn behind the series
        defaults["custom"] = {"thresholdsStyle": {"mode": "line+area"}}
        defaults["color"] = {"mode": "palette-classic"}
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": queries,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options or {},
        "gridPos": {"w": w, "h": h},
    }


def worst_colour_by(level: str) -> dict[str, Any]:
    inner = last_per_unit("level")
    query = f'SELECT max("level") AS "level" FROM ({inner}) GROUP BY "{level}"'
    return panel(
        "bargauge",
        f"Worst active colour per {level}",
        [target(query, alias=f"$tag_{level}")],
        w=8,
        thresholds=COLOUR_STEPS,
        mappings=LEVEL_MAPPINGS,
        options={"displayMode": "basic", "orientation": "horizontal", "showUnfilled": True},
        description="0 green (normal), 1 blue, 2 yellow, 3 orange, 4 red",
    )


# -- dashboards ---------------------------------------------------------------------------


def hierarchy_variables() -> list[dict[str, Any]]:
    variables: list[dict[str, Any]] = [
        {
            "type": "datasource",
            "name": "datasource",
            "label": "InfluxDB",
            "query": "influxdb",
            "current": {"text": "SmartUnit InfluxDB", "value": "smartunit-influxdb"},
        }
    ]
    for position, level in enumerate(LEVELS):
        above = LEVELS[:position]
        condition = " AND ".join(f'"{k}" =~ /^${k}$/' for k in above)
        # "<display name>|<id>" (collector/snapshots.py): the name shown, the id the value
        query = f'SHOW TAG VALUES FROM "unit_status" WITH KEY = "{level}_label"'
        if condition:
            query += f" WHERE {condition}"
        variables.append(
            {
                "type": "query",
                "name": level,
                "label": level.capitalize(),
                "datasource": DATASOURCE,
                "query": query,
                "definition": query,
                "regex": LABEL_REGEX,
                "refresh": 1,  # on dashboard load
                "includeAll": True,
                "allValue": ".*",
                "multi": True,
                "sort": 1,
                "current": {"text": "All", "value": "$__all"},
            }
        )
    return variables


def of_colour(colour: str) -> str:
    return f"\"colour\" = '{colour}'"


def annotations() -> dict[str, Any]:
    """One annotation query per warning colour, drawn in that colour: a red alert's events
    are red marks on every time series, a blue one's blue."""
    fields = '"note", "type", "state", "colour", "device", "unit", "alert_id"'
    return {
        "list": [
            {
                "name": f"Alert events: {colour}",
                "datasource": DATASOURCE,
                "enable": colour != "green",
                "iconColor": colour,
                "query": f'SELECT {fields} FROM "alert_events" WHERE {where(of_colour(colour))}',
                "textColumn": "note",
                "tagsColumn": "type,state,unit,device",
            }
            for colour in WARNING_COLOURS
        ]
    }


def dashboard(
    uid: str, title: str, panels: list[dict[str, Any]], tags: list[str]
) -> dict[str, Any]:
    x = y = row_height = 0
    for number, p in enumerate(panels, start=1):
        w, h = p["gridPos"]["w"], p["gridPos"]["h"]
        if x + w > 24:
            x, y, row_height = 0, y + row_height, 0
        p["gridPos"] = {"x": x, "y": y, "w": w, "h": h}
        p["id"] = number
        x, row_height = x + w, max(row_height, h)
    return {
        "uid": uid,
        "title": title,
        "tags": ["smartunit", *tags],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": hierarchy_variables()},
        "annotations": annotations(),
        "links": [
            {"type": "dashboards", "tags": ["smartunit"], "asDropdown": True, "title": "SmartUnit"}
        ],
        "panels": panels,
    }


def city_overview() -> dict[str, Any]:
    colours = ["red", "orange", "yellow", "blue"]
    by_colour = ", ".join(f'sum("{c}") AS "{c}"' for c in colours)
    open_now = f"SELECT {by_colour} FROM ({last_per_unit(*colours)})"
    open_over_time = (
        f"SELECT {by_colour} FROM ({last_per_unit(*colours, by_time=True)}) "
        "GROUP BY time($__interval)"
    )
    readings = (
        'SELECT non_negative_derivative(last("readings_accepted"), 1s) AS "readings/s", '
        'non_negative_derivative(last("rejected"), 1s) AS "rejected/s" '
        'FROM "smartunit_ingest" WHERE $timeFilter GROUP BY time($__interval), "collector"'
    )
    return dashboard(
        "smartunit-city",
        "SmartUnit — City overview",
        [
            worst_colour_by("district"),
            worst_colour_by("street"),
            worst_colour_by("grid"),
            panel(
                "stat",
                "Open alerts by colour",
                [target(open_now)],
                w=8,
                h=6,
                options={"colorMode": "background", "graphMode": "none"},
            ),
            panel(
                "stat",
                "Oldest open alert",
                [target(f'SELECT max("oldest_age_s") FROM ({last_per_unit("oldest_age_s")})')],
                w=4,
                h=6,
                unit="s",
                thresholds=steps(("orange", 900), ("red", 3600)),
            ),
            panel(
                "stat",
                "Overdue acknowledgements",
                [target(f'SELECT sum("overdue") FROM ({last_per_unit("overdue")})')],
                w=4,
                h=6,
                thresholds=steps(("red", 1)),
                description="Active alerts nobody acknowledged within their colour's deadline",
            ),
            panel(
                "stat",
                "Readings per second",
                [target(readings)],
                w=8,
                h=6,
                options={"graphMode": "area"},
            ),
            panel(
                "timeseries",
                "Open alerts over time, by colour",
                [target(open_over_time)],
                w=12,
            ),
            panel(
                "table",
                "Units with open alerts",
                [
                    target(
                        last_per_unit("level", "active", "overdue", "oldest_age_s"),
                        table=True,
                    )
                ],
                w=12,
                mappings=LEVEL_MAPPINGS,
            ),
        ],
        ["overview"],
    )


def crowd() -> dict[str, Any]:
    people_per_unit = (
        'SELECT sum("people") AS "people" FROM (SELECT mean("people") AS "people" '
        f'FROM "camera" WHERE {where()} GROUP BY time($__interval), "unit", "device") '
        'GROUP BY time($__interval), "unit"'
    )
    safe = last_per_unit("safe_capacity", extra=SAFE_CAPACITY_KNOWN, by_time=True)
    vehicles = (
        'SELECT sum("vehicles") AS "vehicles" FROM (SELECT mean("vehicles") AS "vehicles" '
        f'FROM "camera" WHERE {where()} GROUP BY time($__interval), "unit", "device") '
        'GROUP BY time($__interval), "unit"'
    )
    surges = (
        'SELECT "colour", "value", "threshold", "detector", "device", "unit" FROM "detections" '
        f"WHERE {where()} AND \"family\" = 'camera' AND \"kind\" = 'raised'"
    )
    return dashboard(
        "smartunit-crowd",
        "SmartUnit — Crowds and traffic",
        [
            panel(
                "timeseries",
                "People per site against its safe capacity",
                [
                    target(people_per_unit, alias="$tag_unit"),
                    target(safe, "B", alias="$tag_unit safe"),
                ],
                w=16,
            ),
            busiest_sites(),
            panel(
                "timeseries",
                "Vehicles per site",
                [target(vehicles, alias="$tag_unit")],
                w=12,
            ),
            panel(
                "table",
                "Surges raised (capacity rules and detectors)",
                [target(surges, table=True)],
                w=12,
                description=f"{MAY_BE_EMPTY}: no crowd detection in the time range",
            ),
        ],
        ["crowd"],
    )


def busiest_sites() -> dict[str, Any]:
    """People now per site against its safe capacity: two queries joined on the unit.

    A site's people are the sum of its cameras' latest counts; its safe capacity is the
    unit's (unit_status). Grafana joins the two: InfluxQL cannot.
    """
    people_now = (
        'SELECT sum("people") AS "people now" FROM (SELECT last("people") AS "people" '
        f'FROM "camera" WHERE {where()} GROUP BY "unit", "device") GROUP BY "unit"'
    )
    safe_now = last_per_unit("safe_capacity", extra=SAFE_CAPACITY_KNOWN)
    share = "share of safe capacity"
    table = panel(
        "table",
        "Busiest sites (last reading)",
        [target(people_now, table=True), target(safe_now, "B", table=True)],
        w=8,
    )
    table["transformations"] = [
        {"id": "joinByField", "options": {"byField": "unit", "mode": "outer"}},
        {
            "id": "calculateField",
            "options": {
                "mode": "binary",
                "binary": {"left": "people now", "operator": "/", "right": "safe_capacity"},
                "alias": share,
            },
        },
        {  # the two queries' time columns out, whatever Grafana names them after the join
            "id": "filterFieldsByName",
            "options": {"include": {"names": ["unit", "people now", "safe_capacity", share]}},
        },
        {"id": "sortBy", "options": {"sort": [{"field": share, "desc": True}]}},
    ]
    table["fieldConfig"]["overrides"] = [
        {
            "matcher": {"id": "byName", "options": share},
            "properties": [
                {"id": "unit", "value": "percentunit"},
                {
                    "id": "thresholds",
                    "value": {
                        "mode": "absolute",
                        "steps": steps(("yellow", 0.7), ("orange", 0.85), ("red", 1.0)),
                    },
                },
                {"id": "custom.cellOptions", "value": {"type": "color-background"}},
            ],
        }
    ]
    return table


def parking() -> dict[str, Any]:
    occupancy = (
        'SELECT 100 * sum("occupied") / sum("capacity") AS "occupancy" FROM '
        '(SELECT mean("occupied") AS "occupied", mean("capacity") AS "capacity" FROM "parking" '
        f'WHERE {where()} GROUP BY time($__interval), "unit", "device") '
        'GROUP BY time($__interval), "unit"'
    )
    free = (
        'SELECT sum("free") AS "free" FROM (SELECT last("free") AS "free" FROM "parking" '
        f'WHERE {where()} GROUP BY time($__interval), "unit", "device") '
        'GROUP BY time($__interval), "unit"'
    )
    lots = (
        'SELECT last("occupied") AS "occupied", last("capacity") AS "capacity", '
        'last("free") AS "free", 100 * last("occupied") / last("capacity") AS "% full" '
        f'FROM "parking" WHERE {where()} GROUP BY "unit", "device"'
    )
    arrivals = (
        'SELECT sum("change") AS "arrivals" FROM (SELECT difference("occupied") AS "change" '
        f'FROM "parking" WHERE {where()} GROUP BY "unit", "device") '
        'WHERE "change" > 0 GROUP BY time(1h), "unit"'
    )
    return dashboard(
        "smartunit-parking",
        "SmartUnit — Parking",
        [
            panel(
                "timeseries",
                "Occupancy per lot",
                [target(occupancy, alias="$tag_unit")],
                w=12,
                unit="percent",
                thresholds=PARKING_STEPS,
                bands=True,
            ),
            panel("timeseries", "Free spaces per lot", [target(free, alias="$tag_unit")], w=12),
            panel(
                "table",
                "Lots, fullest first",
                [target(lots, table=True)],
                w=12,
                description="Blue from 90 % (nearly full), yellow from 98 % (full), as the presets",
                thresholds=PARKING_STEPS,
            ),
            panel(
                "timeseries",
                "Turnover: arrivals per hour",
                [target(arrivals, alias="$tag_unit")],
                w=12,
                options={"drawStyle": "bars"},
                description="Sum of increases of the occupied count, per lot and hour",
            ),
        ],
        ["parking"],
    )


CHEM_QUANTITIES = [  # quantity, title, unit, bands (GB/T 50493-2019 presets)
    ("lel_pct", "Combustible gas (% LEL)", "percent", [(25, "orange"), (50, "red")]),
    ("h2s_ppm", "H2S (ppm)", "ppm", [(7.1, "orange"), (14.2, "red")]),
    ("temp_c", "Temperature", "celsius", []),
    ("pressure_kpa", "Pressure", "pressurekpa", []),
    ("level_pct", "Tank level", "percent", []),
]


def chem() -> dict[str, Any]:
    panels = []
    state = last_per_unit(
        "level", "active", "red", "orange", "yellow", "blue", extra="\"kind\" = 'chem_enterprise'"
    )
    panels.append(
        panel(
            "table",
            "Enterprises: red / orange / yellow / blue state",
            [target(state, table=True)],
            w=24,
            h=7,
            mappings=LEVEL_MAPPINGS,
            thresholds=COLOUR_STEPS,
        )
    )
    for quantity, title, unit, bands in CHEM_QUANTITIES:
        query = (
            f'SELECT mean("{quantity}") FROM "chem" WHERE {where()} '
            'GROUP BY time($__interval), "unit", "device" fill(none)'
        )
        bands_steps = steps(*((colour, value) for value, colour in bands))
        panels.append(
            panel(
                "timeseries",
                title,
                [target(query, alias="$tag_unit $tag_device")],
                w=12,
                unit=unit,
                thresholds=bands_steps if bands else None,
                bands=bool(bands),
                description="Bands: GB/T 50493-2019 level 1 and 2 as shipped" if bands else "",
            )
        )
    return dashboard("smartunit-chem", "SmartUnit — Chemical park", panels, ["chem"])


# The fire presets: heat at 57 degC (orange); water pressure below 150 / 100 kPa.
HEAT_STEPS = steps(("orange", 57))
PRESSURE_STEPS = [  # dangerous when low: red below 100 kPa, orange below 150 kPa
    {"color": "red", "value": None},
    {"color": "orange", "value": 100},
    {"color": "green", "value": 150},
]
SMOKE_MAPPINGS = [
    {
        "type": "value",
        "options": {
            "0": {"text": "clear", "color": "green", "index": 0},
            "1": {"text": "SMOKE", "color": "red", "index": 1},
        },
    }
]


def fire() -> dict[str, Any]:
    detectors = (
        'SELECT last("smoke") AS "smoke", last("temp_c") AS "temp_c" FROM "fire" '
        f'WHERE {where()} GROUP BY "unit", "device"'
    )
    alarms = (
        f'SELECT max("smoke") AS "smoke" FROM "fire" WHERE {where()} '
        'GROUP BY time($__interval), "unit" fill(none)'
    )
    pressure = (
        f'SELECT mean("pressure_kpa") FROM "fire" WHERE {where()} '
        'GROUP BY time($__interval), "unit", "device" fill(none)'
    )
    lowest = (
        'SELECT min("pressure_kpa") AS "pressure_kpa" FROM (SELECT last("pressure_kpa") AS '
        f'"pressure_kpa" FROM "fire" WHERE {where()} GROUP BY "unit", "device") GROUP BY "unit"'
    )
    heat = (
        f'SELECT max("temp_c") FROM "fire" WHERE {where()} '
        'GROUP BY time($__interval), "unit", "device" fill(none)'
    )
    return dashboard(
        "smartunit-fire",
        "SmartUnit — Fire safety",
        [
            panel(
                "table",
                "Detectors: smoke and temperature now",
                [target(detectors, table=True)],
                w=12,
                mappings=SMOKE_MAPPINGS,
                description="The fire-smoke preset raises red at once on a detector in alarm",
            ),
            panel(
                "bargauge",
                "Lowest fire-water pressure per unit",
                [target(lowest, alias="$tag_unit")],
                w=12,
                unit="pressurekpa",
                thresholds=PRESSURE_STEPS,
                options={"displayMode": "basic", "orientation": "horizontal"},
                description="Red below 100 kPa (GB 50974-2014 minimum static pressure), "
                "orange below 150 kPa, as the fire-water-pressure-low preset",
            ),
            panel(
                "timeseries",
                "Fire-water pressure",
                [target(pressure, alias="$tag_unit $tag_device")],
                w=12,
                unit="pressurekpa",
                thresholds=PRESSURE_STEPS,
                bands=True,
            ),
            panel(
                "timeseries",
                "Temperature at detectors",
                [target(heat, alias="$tag_unit $tag_device")],
                w=12,
                unit="celsius",
                thresholds=HEAT_STEPS,
                bands=True,
                description="Orange from 57 degC (class A1 heat detectors), as the fire-heat "
                "preset",
            ),
            panel(
                "timeseries",
                "Smoke alarms per unit",
                [target(alarms, alias="$tag_unit")],
                w=24,
                options={"drawStyle": "bars"},
                mappings=SMOKE_MAPPINGS,
            ),
        ],
        ["fire"],
    )


def devices() -> dict[str, Any]:
    status = (
        'SELECT last("online") AS "online", last("state") AS "state" FROM "device_status" '
        f'WHERE {where()} GROUP BY "unit", "device"'
    )
    online = (
        'SELECT sum("online") AS "online", count("online") - sum("online") AS "offline" FROM '
        f'(SELECT last("online") AS "online" FROM "device_status" WHERE {where()} '
        'GROUP BY "device")'
    )
    # A field ("level") besides the tags: InfluxQL returns no rows for tags alone. A
    # gateway's detections carry the hierarchy its devices share (collector/detecting.py).
    is_silence = "\"detector\" = 'silence'"
    silent = (
        'SELECT "kind", "colour", "level", "device", "family", "unit" FROM "detections" '
        f"WHERE {where(is_silence)}"
    )
    loss = [
        target(
            'SELECT max("seq") - min("seq") + 1 - count("seq") AS "lost" '
            f'FROM "{family}" WHERE {where()} GROUP BY "unit", "device"',
            ref,
            table=True,
        )
        for ref, family in zip(TARGET_REFS, FAMILIES, strict=False)
    ]
    # Increments (collector/telemetry.py), summed: right across restarts and collectors.
    rejected = (
        'SELECT sum("rejected") AS "rejected" FROM "smartunit_rejections" '
        'WHERE $timeFilter GROUP BY time($__interval), "reason" fill(none)'
    )
    return dashboard(
        "smartunit-devices",
        "SmartUnit — Devices",
        [
            panel("stat", "Online / offline", [target(online)], w=6, h=6),
            panel(
                "table",
                "Device status (retained, last will)",
                [target(status, table=True)],
                w=18,
                h=6,
            ),
            panel(
                "table",
                "Silent devices and gateways",
                [target(silent, table=True)],
                w=12,
                description=f"{MAY_BE_EMPTY}: nobody went quiet in the time range",
            ),
            panel(
                "table",
                "Message loss from seq gaps",
                loss,
                w=12,
                description="Readings missing between a device's first and last seq in the "
                "range (a device that restarts its counter reads as negative)",
            ),
            panel(
                "timeseries",
                "Rejected messages by reason",
                [target(rejected, alias="$tag_reason")],
                w=24,
                options={"drawStyle": "bars"},
            ),
        ],
        ["devices"],
    )


def collector() -> dict[str, Any]:
    def rate(field: str, name: str) -> str:
        return f'non_negative_derivative(last("{field}"), 1s) AS "{name}"'

    def series(selection: str) -> str:
        return (
            f'SELECT {selection} FROM "smartunit_ingest" WHERE $timeFilter '
            'GROUP BY time($__interval), "collector"'
        )

    return dashboard(
        "smartunit-collector",
        "SmartUnit — Collector",
        [
            panel(
                "timeseries",
                "Throughput",
                [
                    target(
                        series(
                            ", ".join(
                                [
                                    rate("messages_received", "messages/s"),
                                    rate("readings_accepted", "readings/s"),
                                    rate("lines_written", "points written/s"),
                                ]
                            )
                        )
                    )
                ],
                w=12,
            ),
            panel(
                "timeseries",
                "Queue depth: received, not yet stored",
                [target(series('max("inbox") AS "inbox", max("write_queue") AS "write batches"'))],
                w=12,
                description="The inbox is the backlog the broker has handed over; "
                "it is bounded by the receive maximum",
            ),
            panel(
                "timeseries",
                "InfluxDB write latency",
                [target(series('mean("write_latency_ms") AS "write"'))],
                w=8,
                unit="ms",
            ),
            panel(
                "timeseries",
                "Write retries and dropped points",
                [
                    target(
                        series(
                            rate("write_retries", "retries/s")
                            + ", "
                            + rate("lines_dropped", "dropped/s")
                        )
                    )
                ],
                w=8,
            ),
            panel(
                "timeseries",
                "Disk spool (while InfluxDB is down or slow)",
                [target(series('max("spool_bytes") AS "spooled bytes"'))],
                w=8,
                unit="bytes",
                description="Batches acknowledged to the broker and waiting on disk for "
                "InfluxDB; an operator alert opens at 80 % of ingest.spool_max_bytes",
            ),
            panel(
                "timeseries",
                "Arrival age: how late readings arrive",
                [target(series('max("arrival_age_s") AS "median age"'))],
                w=8,
                unit="s",
                description="Receive time minus the newest device time of each message, "
                "median per stats interval; the collector-behind alert watches it",
            ),
            panel(
                "timeseries",
                "Webhook outbox backlog",
                [
                    target(
                        series(
                            'max("outbox_pending") AS "pending", '
                            'max("outbox_dead") AS "dead letters"'
                        )
                    )
                ],
                w=8,
            ),
        ],
        ["collector"],
    )


DASHBOARDS = {
    "city-overview.json": city_overview,
    "crowd.json": crowd,
    "parking.json": parking,
    "chem-park.json": chem,
    "fire.json": fire,
    "devices.json": devices,
    "collector.json": collector,
}


def render() -> dict[str, str]:
    return {
        name: json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
        for name, build in DASHBOARDS.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a file is out of date")
    args = parser.parse_args()
    stale = []
    for name, text in render().items():
        path = OUT / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date: {', '.join(stale)}; run scripts/gen_dashboards.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
