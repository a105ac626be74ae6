"""Fire safety: smoke and heat detectors, and the pressure of the fire-water network.

A device sends what it measures: a smoke detector ``smoke`` (0 clear, 1 alarm) and often
``temp_c``, a heat detector ``temp_c``, a pressure transmitter on a hydrant main or
sprinkler riser ``pressure_kpa`` (gauge). A reading needs at least one of the three.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from collector.families.base import (
    DAY_S,
    WHOLE_DAY,
    Family,
    FastResult,
    FiniteFloat,
    ReadingPayload,
    Route,
    SimulatedDevice,
    Simulation,
    finish,
    is_finite_number,
    no_derived_fields,
)

QUANTITIES = ("smoke", "temp_c", "pressure_kpa")


class FirePayload(ReadingPayload):
    smoke: Annotated[int, Field(ge=0, le=1)] | None = None
    temp_c: FiniteFloat | None = None
    pressure_kpa: FiniteFloat | None = None

    @model_validator(mode="after")
    def _needs_a_measurement(self) -> FirePayload:
        if self.smoke is None and self.temp_c is None and self.pressure_kpa is None:
            raise PydanticCustomError(
                "missing_field", "a fire reading needs smoke, temp_c or pressure_kpa"
            )
        return self

    def storable_fields(self) -> dict[str, int | float]:
        fields: dict[str, int | float] = {}
        if self.smoke is not None:
            fields["smoke"] = self.smoke
        # Always floats: a temperature first written as 24 and later as 24.5 must not hit
        # a field type conflict in InfluxDB.
        if self.temp_c is not None:
            fields["temp_c"] = float(self.temp_c)
        if self.pressure_kpa is not None:
            fields["pressure_kpa"] = float(self.pressure_kpa)
        return fields


def encode(obj: dict[str, Any], route: Route, now_ms: int, oldest: int, newest: int) -> FastResult:
    get = obj.get
    smoke, temp, pressure = get("smoke"), get("temp_c"), get("pressure_kpa")
    fields: dict[str, int | float] = {}
    parts: list[str] = []
    if smoke is not None:
        if not (type(smoke) is int and 0 <= smoke <= 1):
            return None
        fields["smoke"] = smoke
        parts.append(f"smoke={smoke}i")
    for name, value in (("temp_c", temp), ("pressure_kpa", pressure)):
        if value is not None:
            if not is_finite_number(value):
                return None
            number = fields[name] = float(value)
            parts.append(f"{name}={number!r}")
    if not fields:
        return None
    return finish(obj, route, fields, ",".join(parts), now_ms, oldest, newest)


def _simulated(device: SimulatedDevice, t: float, hour: float) -> dict[str, Any]:
    rng = device.rng
    temp = 24 + 3 * math.sin((hour - 9) / 24 * 2 * math.pi) + rng.gauss(0, 0.2)
    pressure = rng.gauss(350, 2.0)  # a hydrant main held by its jockey pump
    smoke = 0
    fire = device.anomaly_progress("smoke", t)
    if fire is not None:
        smoke = 1
        temp += 45 * fire
    drop = device.anomaly_progress("pressure_drop", t)
    if drop is not None:
        pressure -= 300 * min(1.0, 4 * drop)  # a burst main: down within the first quarter
    return {"smoke": smoke, "temp_c": round(temp, 2), "pressure_kpa": round(max(pressure, 0.0), 1)}


FAMILY = Family(
    name="fire",
    summary="a smoke / heat detector's alarm and temperature, or a fire-water pressure",
    payload=FirePayload,
    encode=encode,
    derived=no_derived_fields,
    count_field="seq",
    example={"ts": 1700000000, "seq": 42, "smoke": 0, "temp_c": 24.5, "pressure_kpa": 350.0},
    simulation=Simulation(
        interval_s=10.0,
        anomalies=("smoke", "pressure_drop", "stuck_sensor", "device_offline"),
        device_prefix="sim-fire",
        generated_capacity=0,
        capacity=lambda registered, unit, safe: 0,
        values=_simulated,
    ),
    detection={
        # temperatures and water-main pressures held by pumps: as chem's process values
        "warmup_enough_readings": WHOLE_DAY,
        "shift": {"warmup_s": DAY_S},
        # a slow level seldom changes band, so a band change is rare by the count of
        # readings and ordinary over hours: surprise must stand out further
        "sequence": {"likelihood": {"floor": 0.12}},
        "alert_every_s": 1460 * DAY_S,
    },
)
