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

Each place of the hierarchy and the unit also has a ``<level>_label`` tag,
``<display name>|<id>`` (``观前街广场|guanqian-square``): the dashboards' variables list
these, show the name and filter by the id. The name loses any ``|``, so the first one
always ends it, whatever the id holds. A unit keeps its series, as a name is one per id.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from collector.alerts.model import Alert, ack_due_at_ms, worst_level
from collector.lineprotocol import check_tag_text, encode_line
from collector.registry import Registry, Unit
from detectors.levels import COLOURS

UNIT_STATUS_MEASUREMENT = "unit_status"


@dataclass(frozen=True)
class UnitState:
    """A unit of the registry (or one only its alerts name) with its active alerts."""

    id: str
    unit: Unit | None
    alerts: list[Alert]

    @property
    def level(self) -> int:
        return worst_level(self.alerts)

    @property
    def hierarchy(self) -> dict[str, str]:
        if self.unit is not None:
            return self.unit.hierarchy.as_tags()
        return dict(self.alerts[0].hierarchy) if self.alerts else {}

    @property
    def kind(self) -> str:
        return self.unit.kind if self.unit is not None else "other"


def unit_states(registry: Registry, active: Iterable[Alert]) -> list[UnitState]:
    """Every unit of the registry and every unit with an active alert, by id."""
    by_unit: dict[str, list[Alert]] = {unit: [] for unit in registry.units}
    for alert in active:
        by_unit.setdefault(alert.unit, []).append(alert)
    return [
        UnitState(unit_id, registry.units.get(unit_id), alerts)
        for unit_id, alerts in sorted(by_unit.items())
    ]


def unit_status_lines(
    registry: Registry,
    active: Iterable[Alert],
    now_ms: int,
    ack_deadlines_s: Mapping[Any, float],
) -> list[str]:
    quiet = _quiet_lines(registry)
    lines = []
    for state in unit_states(registry, active):
        line = None if state.alerts else quiet.get(state.id)
        if line is not None:
            lines.append(f"{line} {now_ms}")
        else:
            lines.append(_status_line(state, now_ms, ack_deadlines_s, registry.places))
    return lines


LABELLED_LEVELS = ("district", "street", "community", "grid")
LABEL_SEPARATOR = "|"
_LABEL_NAME_MAX = 100  # characters: a tag is at most 512 bytes, and the id follows


def place_label(name: str, place_id: str) -> str:
    """``<display name>|<id>``, the name made writable as a tag and free of the separator."""
    shown = "".join(" " if check_tag_text(c) else c for c in name.replace(LABEL_SEPARATOR, "/"))
    shown = shown.strip()[:_LABEL_NAME_MAX] or place_id
    return f"{shown}{LABEL_SEPARATOR}{place_id}"


def _labels(state: UnitState, places: Mapping[str, str]) -> dict[str, str]:
    hierarchy = state.hierarchy
    labels = {
        f"{level}_label": place_label(places.get(hierarchy[level], ""), hierarchy[level])
        for level in LABELLED_LEVELS
        if level in hierarchy
    }
    name = state.unit.name if state.unit is not None else ""
    labels["unit_label"] = place_label(name, state.id)
    return labels


def _status_line(
    state: UnitState,
    now_ms: int,
    ack_deadlines_s: Mapping[Any, float],
    places: Mapping[str, str],
) -> str:
    unit, alerts = state.unit, state.alerts
    tags = {"unit": state.id, "kind": state.kind, **state.hierarchy, **_labels(state, places)}
    level = state.level
    due = [ack_due_at_ms(a, ack_deadlines_s) for a in alerts]
    fields: dict[str, int | float | str] = {
        "level": level,
        "colour": COLOURS[level],
        "active": len(alerts),
        **{c: sum(a.colour == c for a in alerts) for c in COLOURS[1:]},
        "overdue": sum(d is not None and now_ms >= d for d in due),
        "oldest_age_s": max(((now_ms - a.started_at_ms) / 1000 for a in alerts), default=0.0),
    }
    if unit is not None and unit.safe_capacity:
        fields["safe_capacity"] = unit.safe_capacity
    if unit is not None and unit.capacity:
        fields["capacity"] = unit.capacity
    return encode_line(UNIT_STATUS_MEASUREMENT, tags, fields, now_ms)


# The line (less its timestamp) of each unit of the registry last snapshotted, for while
# no alert is active there: most units, most of the time. Building every line anew cost
# 12 ms per snapshot for 500 units (0.9 ms cached), on a thread that shares the GIL with
# live alerts. Registries compare by identity: a reloaded one is built afresh.
@functools.lru_cache(maxsize=1)
def _quiet_lines(registry: Registry) -> dict[str, str]:
    return {
        unit_id: _status_line(UnitState(unit_id, unit, []), 0, {}, registry.places).removesuffix(
            " 0"
        )
        for unit_id, unit in registry.units.items()
    }
