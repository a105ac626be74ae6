"""Periodic snapshots for the dashboards: what InfluxQL cannot work out from events alone.

Grafana reads InfluxDB only, and the alert book lives in SQLite, so every stats interval
the collector writes measurement ``unit_status``: one point per unit of the registry (and
per unit with an active alert), tagged like its readings plus its ``kind``:

- ``level`` (0 green .. 4 red) and ``colour``: the worst active alert's colour;
- ``active``, ``blue`` .. ``red``: active alerts, in all and by colour;
- ``overdue``: active alerts nobody acknowledged within their colour's deadline;
- ``oldest_age_s``: age of the oldest active alert (0 when none);
- ``safe_capacity`` / ``capacity``: the registry's figures, so panels can draw people
  and cars against them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from collector.alerts.model import ESCALATES_FROM, Alert
from collector.lineprotocol import encode_line
from collector.registry import Registry
from detectors.levels import COLOURS

UNIT_STATUS_MEASUREMENT = "unit_status"


def unit_status_lines(
    registry: Registry,
    active: Iterable[Alert],
    now_ms: int,
    ack_deadlines_s: Mapping[Any, float],
) -> list[str]:
    by_unit: dict[str, list[Alert]] = {unit: [] for unit in registry.units}
    for alert in active:
        by_unit.setdefault(alert.unit, []).append(alert)
    lines = []
    for unit_id, alerts in sorted(by_unit.items()):
        unit = registry.units.get(unit_id)
        tags = {"unit": unit_id, "kind": unit.kind if unit else "other"}
        if unit is not None:
            tags |= unit.hierarchy.as_tags()
        elif alerts and alerts[0].hierarchy:
            tags |= alerts[0].hierarchy
        level = max((COLOURS.index(a.colour) for a in alerts), default=0)
        fields: dict[str, int | float | str] = {
            "level": level,
            "colour": COLOURS[level],
            "active": len(alerts),
            **{c: sum(a.colour == c for a in alerts) for c in COLOURS[1:]},
            "overdue": sum(_overdue(a, now_ms, ack_deadlines_s) for a in alerts),
            "oldest_age_s": max(((now_ms - a.started_at_ms) / 1000 for a in alerts), default=0.0),
        }
        if unit is not None and unit.safe_capacity:
            fields["safe_capacity"] = unit.safe_capacity
        if unit is not None and unit.capacity:
            fields["capacity"] = unit.capacity
        lines.append(encode_line(UNIT_STATUS_MEASUREMENT, tags, fields, now_ms))
    return lines


def _overdue(alert: Alert, now_ms: int, ack_deadlines_s: Mapping[Any, float]) -> bool:
    deadline = ack_deadlines_s.get(alert.colour)
    if deadline is None or alert.state not in ESCALATES_FROM:
        return False
    return now_ms - alert.started_at_ms >= deadline * 1000
