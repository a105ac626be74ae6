"""Cameras at checkpoints and sites: people and vehicles counted per interval."""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from collector.families.base import (
    DAY_S,
    MAX_COUNT,
    MAX_INTERVAL_S,
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
    no_derived_fields,
)


class CameraPayload(ReadingPayload):
    people: Count | None = None
    vehicles: Count | None = None
    interval_s: Annotated[float, Field(gt=0, le=MAX_INTERVAL_S, allow_inf_nan=False)] | None = None

    @model_validator(mode="after")
    def _needs_a_count(self) -> CameraPayload:
        if self.people is None and self.vehicles is None:
            raise PydanticCustomError("missing_field", "a camera reading needs people or vehicles")
        return self

    def storable_fields(self) -> dict[str, int | float]:
        fields: dict[str, int | float] = {}
        if self.people is not None:
            fields["people"] = self.people
        if self.vehicles is not None:
            fields["vehicles"] = self.vehicles
        if self.interval_s is not None:
            fields["interval_s"] = float(self.interval_s)
        return fields


def encode(obj: dict[str, Any], route: Route, now_ms: int, oldest: int, newest: int) -> FastResult:
    get = obj.get
    people, vehicles, interval = get("people"), get("vehicles"), get("interval_s")
    # The checks written out, not called: this runs for every camera message.
    fields: dict[str, int | float]
    if people is not None:
        if not (type(people) is int and 0 <= people <= MAX_COUNT):
            return None
        if vehicles is None:
            fields = {"people": people}
            text = f"people={people}i"
        elif type(vehicles) is int and 0 <= vehicles <= MAX_COUNT:
            fields = {"people": people, "vehicles": vehicles}
            text = f"people={people}i,vehicles={vehicles}i"
        else:
            return None
    elif type(vehicles) is int and 0 <= vehicles <= MAX_COUNT:
        fields = {"vehicles": vehicles}
        text = f"vehicles={vehicles}i"
    else:
        return None  # no count, or not a count
    if interval is not None:
        kind = type(interval)
        if not ((kind is int or kind is float) and 0 < interval <= MAX_INTERVAL_S):
            return None  # NaN fails the comparison, infinity the bound
        interval = fields["interval_s"] = float(interval)
        text = f"{text},interval_s={interval!r}"
    return finish(obj, route, fields, text, now_ms, oldest, newest)


def _simulated(device: SimulatedDevice, t: float, hour: float) -> dict[str, Any]:
    rng = device.rng
    crowd = 0.05 + 0.5 * bump(hour, 11, 2.5) + 0.6 * bump(hour, 17.5, 2)
    traffic = 0.05 + 0.7 * bump(hour, 8, 1.2) + 0.8 * bump(hour, 18, 1.3)
    people = crowd * device.capacity * 0.6
    surge = device.anomaly_progress("crowd_surge", t)
    if surge is not None:
        people += device.capacity * 1.2 * surge
    return {
        "people": max(0, round(rng.gauss(people, math.sqrt(people + 1)))),
        "vehicles": max(0, round(rng.gauss(traffic * 80, math.sqrt(traffic * 80 + 1)))),
        "interval_s": device.interval_s,
    }


FAMILY = Family(
    name="camera",
    summary="a camera's counts of people and vehicles over its interval",
    payload=CameraPayload,
    encode=encode,
    derived=no_derived_fields,
    count_field="seq",
    example={"ts": 1700000000, "seq": 42, "people": 12, "vehicles": 3, "interval_s": 10},
    simulation=Simulation(
        interval_s=10.0,
        anomalies=("crowd_surge", "camera_dropout", "stuck_sensor", "device_offline"),
        device_prefix="sim-cam",
        generated_capacity=400,
        capacity=lambda registered, unit, safe: safe or 500,
        values=_simulated,
    ),
    detection={
        # counts of people and vehicles: a day of warm-up; a new extreme alerts when it is
        # rarer than once in two weeks of the series (its own rate and size of breaks, in
        # device time: the firmware's interval may be 10 s or 2 minutes)
        "warmup_enough_readings": WHOLE_DAY,
        "shift": {"warmup_s": DAY_S},
        # read every 10 s, a crowd surge widens the range the bands are cut from, and the
        # next evenings' peaks fall in bands seldom seen: surprise must stand out further
        "sequence": {"likelihood": {"floor": 0.12}},
        "alert_every_s": 14 * DAY_S,
    },
)
