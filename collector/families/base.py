"""What every family plug-in is made of, and the pieces the plug-ins share.

A family module (``collector/families/<name>.py``) defines one ``Family``: its payload
model (the definition of a valid reading, held by ``protocol.Decoder``), its fast encoder
(the same answer without pydantic, held to the model by ``tests/test_fastpath.py``), the
fields it derives from the registry at storage time, and its bookkeeping (a field every
stored reading carries, an example reading, the simulator's profile). Every field of
``Family`` is required, so a family without an encoder or an example does not import.

This module imports nothing from the service: the registry, the protocol and the fast
path build on it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, NamedTuple, Protocol, TypeGuard

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from collector.lineprotocol import INT64_MAX

RESERVED_QUANTITIES = frozenset({"seq", "ts", "time", "device", "device_id"})
# The protocol's limits, shared by the payload models and the fast encoders.
MAX_COUNT = 2**31 - 1
MAX_INTERVAL_S = 86_400
MAX_QUANTITIES = 64
TS_MS_LIMIT = 1e18  # beyond any accepted age, and round() of it cannot overflow


# ``warmup_enough_readings`` for the series of field devices, which live by the day: no
# count of readings stands in for a day of device time (a range learnt over part of a day
# is broken by the next evening or night).
WHOLE_DAY = 1_000_000_000
DAY_S = 86_400.0


def is_quantity_name(name: str) -> bool:
    """[a-z][a-z0-9_]{0,63}, and not a reserved name."""
    return (
        1 <= len(name) <= 64
        and "a" <= name[0] <= "z"
        and all("a" <= c <= "z" or "0" <= c <= "9" or c == "_" for c in name)
        and name not in RESERVED_QUANTITIES
    )


def _quantity_name(name: str) -> str:
    if not is_quantity_name(name):
        raise PydanticCustomError(
            "bad_quantity_name",
            "quantity name {name!r} must match [a-z][a-z0-9_]{{0,63}} and not be reserved",
            {"name": name[:80]},
        )
    return name


Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
QuantityName = Annotated[str, AfterValidator(_quantity_name)]


class ReadingPayload(BaseModel):
    """The fields every reading may carry; a family's model adds its own."""

    # Unknown keys are ignored so that newer firmware can add fields without being rejected.
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    ts: float | str | None = None
    seq: Annotated[int, Field(ge=0, le=INT64_MAX)] | None = None
    device: str | None = None
    device_id: str | None = None

    def storable_fields(self) -> dict[str, int | float]:
        raise NotImplementedError


class Reading(NamedTuple):
    # A tuple, not a frozen dataclass: made once per reading, and three times cheaper.
    family: str
    device: str
    ts_ms: int
    fields: dict[str, int | float]
    seq: int | None = None


# What every message on one data topic shares: (family, device, capacity from the
# registry, "measurement,tags " line prefix). A plain tuple of plain values, which the
# garbage collector stops tracking: 10,000 objects would lengthen every full collection,
# a pause alerts wait for.
Route = tuple[str, str, int | None, str]
FastResult = tuple[Reading, str] | None
# (object, route, received_ms, oldest_ms, newest_ms) -> (reading, line), or None for
# "not sure": the object then goes to the payload model, which names the reason.
FastEncoder = Callable[[dict[str, Any], Route, int, int, int], FastResult]
# (the reading's fields, the registry's capacity) -> fields stored beside the reading's.
DerivedFields = Callable[[Mapping[str, int | float], int | None], dict[str, int | float]]


def no_derived_fields(
    fields: Mapping[str, int | float], capacity: int | None
) -> dict[str, int | float]:
    return {}


def finish(  # noqa: PLR0917 - per reading: positional arguments cost least
    obj: dict[str, Any],
    route: Route,
    fields: dict[str, int | float],
    text: str,
    now_ms: int,
    oldest: int,
    newest: int,
) -> FastResult:
    """The reading and line of a plain object whose own fields (and their line text,
    ``name=value,...``) its family's encoder took; None when its ts, seq or a device claim
    is not plain."""
    get = obj.get
    ts = get("ts")
    if ts is None:
        ts_ms = now_ms
    else:
        kind = type(ts)
        if kind is not float and kind is not int:
            return None
        scaled = ts * 1000
        if not -TS_MS_LIMIT < scaled < TS_MS_LIMIT:  # false for NaN and infinities too
            return None
        ts_ms = round(scaled)
        if not oldest <= ts_ms <= newest:
            return None
    family, device, _, prefix = route
    claimed = get("device")
    if claimed is not None and claimed != device:
        return None
    claimed = get("device_id")
    if claimed is not None and claimed != device:
        return None
    seq = get("seq")
    if seq is None:
        line = f"{prefix}{text} {ts_ms}"
    elif type(seq) is int and 0 <= seq <= INT64_MAX:
        line = f"{prefix}{text},seq={seq}i {ts_ms}"
    else:
        return None
    # tuple.__new__, not Reading(...): a NamedTuple's own __new__ is Python code, and
    # this runs for every reading the fast path takes
    return tuple.__new__(Reading, (family, device, ts_ms, fields, seq)), line


def is_count(value: Any) -> TypeGuard[int]:
    return type(value) is int and 0 <= value <= MAX_COUNT


def is_finite_number(value: Any) -> bool:
    """A JSON number the payload models take as a finite float (not a bool, not NaN)."""
    kind = type(value)
    return (kind is float or kind is int) and -math.inf < value < math.inf


class SimulatedDevice(Protocol):
    """What a simulator profile reads of (and keeps on) the device it makes values for."""

    rng: random.Random
    capacity: int
    send_capacity: bool
    interval_s: float
    memory: dict[str, float]  # the profile's own state between readings (a tank level)

    def anomaly_progress(self, kind: str, t: float) -> float | None:
        """0..1 through an active anomaly of that kind at time t, None when there is none."""
        ...


def bump(hour: float, centre: float, width: float) -> float:
    """A daily peak around ``centre`` o'clock, for the simulator's curves."""
    return math.exp(-(((hour - centre) / width) ** 2))


@dataclass(frozen=True, slots=True, kw_only=True)
class Simulation:
    """How ``smartunit simulate`` makes a device of this family behave."""

    interval_s: float  # between readings, before the simulator's scale
    anomalies: tuple[str, ...]  # kinds the anomaly loop may inject
    device_prefix: str  # ids of generated (unregistered) devices
    generated_capacity: int  # the capacity of a generated device
    # (the device's registered capacity, its unit's capacity, its unit's safe capacity)
    # -> the capacity the values scale with
    capacity: Callable[[int | None, int | None, int | None], int]
    values: Callable[[SimulatedDevice, float, float], dict[str, Any]]  # (device, t, hour)


@dataclass(frozen=True, slots=True, kw_only=True)
class Family:
    """One device family: everything the service and its tools know of it."""

    name: str  # the topic level and the InfluxDB measurement
    summary: str  # one line, for the JSON schema and the docs
    payload: type[ReadingPayload]
    encode: FastEncoder
    derived: DerivedFields
    count_field: str  # a field every stored reading carries (counting readings by it)
    example: dict[str, Any]  # a valid reading
    simulation: Simulation
    # Parameters of the ``auto`` chain for this family's series, over its defaults (which
    # are chosen on NAB's varied series, where a false alert costs little): what the
    # family's signals need to stay quiet around the clock (docs/detectors.md).
    detection: Mapping[str, Any]
