"""Chemical parks: named process and gas quantities (% LEL, ppm, degC, kPa, % level)."""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import Field

from collector.families.base import (
    MAX_QUANTITIES,
    Family,
    FastResult,
    FiniteFloat,
    QuantityName,
    Reading,
    ReadingPayload,
    Route,
    SimulatedDevice,
    Simulation,
    finish_line,
    is_quantity_name,
    no_derived_fields,
    stamp,
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
_GOOD_NAMES: set[str] = set()  # quantity names already checked; bounded below


def _quantity_name(name: str) -> bool:
    good = is_quantity_name(name)
    if good and len(_GOOD_NAMES) < 10_000:
        _GOOD_NAMES.add(name)
    return good


def encode(obj: dict[str, Any], route: Route, now_ms: int, oldest: int, newest: int) -> FastResult:
    _, device, _, prefix = route
    stamped = stamp(obj, device, now_ms, oldest, newest)
    readings = obj.get("readings")
    if stamped is None or type(readings) is not dict or not 1 <= len(readings) <= MAX_QUANTITIES:
        return None
    ts_ms, seq = stamped
    fields: dict[str, int | float] = {}
    good_names = _GOOD_NAMES
    text = ""
    # The checks written out, not called: this runs for every quantity of every message.
    for name, value in readings.items():
        kind = type(value)
        if not ((kind is float or kind is int) and -_INF < value < _INF):
            return None  # not a finite JSON number (a bool, a string, NaN)
        if name not in good_names and not _quantity_name(name):
            return None
        number = fields[name] = float(value)
        text += f",{name}={number!r}"
    return Reading("chem", device, ts_ms, fields, seq), finish_line(prefix, text[1:], seq, ts_ms)


def _simulated(device: SimulatedDevice, t: float, hour: float) -> dict[str, Any]:
    rng = device.rng
    level = device.memory.get("level_pct", 60.0)
    level = device.memory["level_pct"] = min(95.0, max(5.0, level + rng.gauss(0, 0.3)))
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
)
