"""Parking lots: spaces occupied, against the lot's capacity (sent, or from the registry)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field

from collector.families.base import (
    DAY_S,
    MAX_COUNT,
    WHOLE_DAY,
    Count,
    Family,
    FastResult,
    ReadingPayload,
    Route,
    SimulatedDevice,
    Simulation,
    bump,
    finish,
)


class ParkingPayload(ReadingPayload):
    occupied: Count
    capacity: Annotated[int, Field(gt=0, le=MAX_COUNT)] | None = None

    def storable_fields(self) -> dict[str, int | float]:
        fields: dict[str, int | float] = {"occupied": self.occupied}
        if self.capacity is not None:
            fields["capacity"] = self.capacity
        return fields


def derived(fields: Mapping[str, int | float], capacity: int | None) -> dict[str, int | float]:
    """The lot's capacity (the reading's, else the registry's) and its free spaces."""
    known = fields.get("capacity") or capacity
    if not known:
        return {}
    # Over-full lots happen (illegal parking); free space does not go negative.
    return {"capacity": int(known), "free": max(int(known) - int(fields["occupied"]), 0)}


def encode(obj: dict[str, Any], route: Route, now_ms: int, oldest: int, newest: int) -> FastResult:
    occupied, capacity = obj.get("occupied"), obj.get("capacity")
    # The checks and ``derived`` written out, not called: this runs for every message.
    if not (type(occupied) is int and 0 <= occupied <= MAX_COUNT):
        return None
    fields: dict[str, int | float]
    known_capacity = route[2]
    if capacity is None:
        fields = {"occupied": occupied}
    elif type(capacity) is int and 0 < capacity <= MAX_COUNT:
        fields = {"occupied": occupied, "capacity": capacity}
        known_capacity = capacity
    else:
        return None
    if known_capacity:
        free = max(known_capacity - occupied, 0)  # over-full lots happen: never negative
        text = f"occupied={occupied}i,capacity={known_capacity}i,free={free}i"
    else:
        text = f"occupied={occupied}i"
    return finish(obj, route, fields, text, now_ms, oldest, newest)


def _simulated(device: SimulatedDevice, t: float, hour: float) -> dict[str, Any]:
    busy = 0.25 + 0.65 * bump(hour, 13, 4.5)
    occupied = min(device.capacity, max(0, round(device.rng.gauss(busy * device.capacity, 3))))
    values: dict[str, Any] = {"occupied": occupied}
    if device.send_capacity:
        values["capacity"] = device.capacity
    return values


FAMILY = Family(
    name="parking",
    summary="a parking lot's occupied spaces, and its capacity when the registry lacks it",
    payload=ParkingPayload,
    encode=encode,
    derived=derived,
    count_field="occupied",
    example={"ts": 1700000000, "seq": 42, "occupied": 87, "capacity": 120},
    simulation=Simulation(
        interval_s=15.0,
        anomalies=("stuck_sensor", "device_offline"),
        device_prefix="sim-park",
        generated_capacity=150,
        capacity=lambda registered, unit, safe: registered or unit or 200,
        values=_simulated,
    ),
    detection={
        # occupancy follows office hours: a day of warm-up; rare new extremes only
        "warmup_enough_readings": WHOLE_DAY,
        "shift": {"warmup_s": DAY_S},
        "alert_every_s": 21 * DAY_S,
    },
)
