"""Chemical parks: named process and gas quantities (% LEL, ppm, degC, kPa, % level)."""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import Field

from collector.families.base import (
    DAY_S,
    MAX_QUANTITIES,
    WHOLE_DAY,
    Family,
    FastResult,
    FiniteFloat,
    QuantityName,
    ReadingPayload,
    Route,
    SimulatedDevice,
    Simulation,
    finish,
    is_quantity_name,
    no_derived_fields,
)


class ChemPayload(ReadingPayload):
    readings: Annotated[
        dict[QuantityName, FiniteFloat], Field(min_length=1, max_length=MAX_QUANTITIES)
    ]

    def storable_fields(self) -> dict[str, int | float]:
        # Always floats: a quantity first written as 62 and later as 62.5 must not hit a
        # field type conflict in InfluxDB.
        return {name: float(value) for name, value in self.readings.items()}


_INF = math.inf
_FLOAT = {float}
_NUMBER = {float, int}
_GOOD_NAMES: set[str] = set()  # quantity names already checked; bounded below


def _quantity_name(name: str) -> bool:
    good = is_quantity_name(name)
    if good and len(_GOOD_NAMES) < 10_000:
        _GOOD_NAMES.add(name)
    return good


def encode(obj: dict[str, Any], route: Route, now_ms: int, oldest: int, newest: int) -> FastResult:
    readings = obj.get("readings")
    if type(readings) is not dict or not 1 <= len(readings) <= MAX_QUANTITIES:
        return None
    # Whole-dict checks, each one call into C: this runs for every message, and a loop
    # over the quantities checking each costs twice as much.
    kinds = set(map(type, readings.values()))  # bool is a kind of its own: refused
    fields: dict[str, int | float]
    if kinds == _FLOAT:
        fields = readings.copy()
    elif kinds <= _NUMBER:
        fields = {name: float(value) for name, value in readings.items()}
    else:
        return None
    # NaN and infinities make the sum so; so does a sum past the float range, which the
    # payload model then judges
    if not -_INF < sum(fields.values()) < _INF:
        return None
    if not _GOOD_NAMES.issuperset(fields) and not all(map(_quantity_name, fields)):
        return None
    text = ",".join([f"{name}={number!r}" for name, number in fields.items()])
    return finish(obj, route, fields, text, now_ms, oldest, newest)


# A buffer tank under level control: the level wanders around its setpoint and is pulled
# back within hours (an Ornstein-Uhlenbeck process in device time, so it moves as far per
# hour whatever the reporting interval), and the gauge reads it to about 0.2 %.
TANK_SETPOINT_PCT = (45.0, 70.0)  # drawn per device
TANK_SPREAD_PCT = 4.0  # the level's standard deviation around its setpoint
TANK_SETTLE_S = 3 * 3600.0  # how long the control takes to pull a deviation back (1/e)
GAUGE_NOISE_PCT = 0.2


def _tank_level(device: SimulatedDevice, t: float) -> float:
    memory, rng = device.memory, device.rng
    if "level_pct" not in memory:
        memory["setpoint_pct"] = rng.uniform(*TANK_SETPOINT_PCT)
        memory["level_pct"] = memory["setpoint_pct"] + rng.gauss(0, TANK_SPREAD_PCT)
        memory["level_t"] = t
    setpoint = memory["setpoint_pct"]
    keep = math.exp(-max(t - memory["level_t"], 0.0) / TANK_SETTLE_S)
    deviation = (memory["level_pct"] - setpoint) * keep
    deviation += rng.gauss(0, TANK_SPREAD_PCT * math.sqrt(1 - keep * keep))
    memory["level_pct"], memory["level_t"] = setpoint + deviation, t
    return min(95.0, max(5.0, setpoint + deviation + rng.gauss(0, GAUGE_NOISE_PCT)))


def _simulated(device: SimulatedDevice, t: float, hour: float) -> dict[str, Any]:
    rng = device.rng
    level = _tank_level(device, t)
    lel = max(0.0, rng.gauss(1.5, 0.3))
    leak = device.anomaly_progress("gas_leak", t)
    if leak is not None:
        lel += 60.0 * leak
    return {
        "readings": {
            "lel_pct": round(lel, 2),
            "h2s_ppm": round(max(0.0, rng.gauss(0.6, 0.15)), 2),
            "temp_c": round(
                40 + 4 * math.sin((hour - 9) / 24 * 2 * math.pi) + rng.gauss(0, 0.4), 2
            ),
            "pressure_kpa": round(rng.gauss(310, 1.5), 1),
            "level_pct": round(level, 1),
        }
    }


FAMILY = Family(
    name="chem",
    summary="a chemical-park detector's named quantities",
    payload=ChemPayload,
    encode=encode,
    derived=no_derived_fields,
    count_field="seq",
    example={"ts": 1700000000, "seq": 42, "readings": {"lel_pct": 1.5, "temp_c": 41.0}},
    simulation=Simulation(
        interval_s=5.0,
        anomalies=("gas_leak", "stuck_sensor", "device_offline"),
        device_prefix="sim-chem",
        generated_capacity=0,
        capacity=lambda registered, unit, safe: 0,
        values=_simulated,
    ),
    detection={
        # process values under control wander slowly (a tank level) and are read every
        # few seconds, around the clock: a day of warm-up, and a new extreme alerts when it
        # is rarer than once in two years of its series (by the series' own rate and size
        # of breaks, in device time); gas levels also have the rule book's thresholds
        "warmup_enough_readings": WHOLE_DAY,
        "shift": {"warmup_s": DAY_S},
        # a slow level seldom changes band, so a band change is rare by the count of
        # readings and ordinary over hours: surprise must stand out further
        "sequence": {"likelihood": {"floor": 0.12}},
        "alert_every_s": 730 * DAY_S,
    },
)
