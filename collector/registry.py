"""The registry: which unit each device belongs to, and where each unit sits in the city.

Devices publish under their own id only; the device -> unit -> hierarchy mapping lives
here, so moving a device or re-cutting grids is an edit of the registry file, picked up
while the collector runs (``RegistryWatcher``), never a firmware change. A registry edit
that does not validate is refused whole and the last good registry stays in force.

File format (TOML), see ``config/registry.example.toml``::

    [units.pingjiang-checkpoint]
    name = "Pingjiang Road checkpoint"
    kind = "checkpoint"
    hierarchy = { city = "suzhou", district = "gusu", street = "pingjiang",
                  community = "dudu", grid = "G0412" }
    safe_capacity = 800

    [devices.cam-0001]
    unit = "pingjiang-checkpoint"
    family = "camera"
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from collector.config import format_validation_errors, read_toml
from collector.errors import ConfigError
from collector.lineprotocol import check_tag_text, encode_tags

log = logging.getLogger(__name__)

FAMILIES: tuple[str, ...] = ("camera", "parking", "chem")
Family = Literal["camera", "parking", "chem"]
HIERARCHY_LEVELS: tuple[str, ...] = (
    "city",
    "district",
    "street",
    "community",
    "grid",
    "micro_grid",
)
UNREGISTERED_UNIT = "_unregistered"

DEVICE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
DEVICE_ID_RULE = "1-64 characters of A-Z a-z 0-9 . _ : -, starting with a letter or digit"


def _tag_text(value: str) -> str:
    problem = check_tag_text(value)
    if problem:
        raise ValueError(problem)
    return value


def _device_id(value: str) -> str:
    if not DEVICE_ID_PATTERN.fullmatch(value):
        raise ValueError(f"device ids are {DEVICE_ID_RULE}")
    return value


TagText = Annotated[str, AfterValidator(_tag_text)]
DeviceId = Annotated[str, AfterValidator(_device_id)]
UnitKind = Literal[
    "checkpoint",
    "residential",
    "campus",
    "hospital",
    "parking",
    "tourist_site",
    "chem_enterprise",
    "square",
    "other",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Hierarchy(_Strict):
    city: TagText
    district: TagText
    street: TagText
    community: TagText
    grid: TagText
    micro_grid: TagText | None = None

    def as_tags(self) -> dict[str, str]:
        return {level: value for level in HIERARCHY_LEVELS if (value := getattr(self, level))}


class Unit(_Strict):
    id: str = ""
    name: str = ""
    kind: UnitKind = "other"
    hierarchy: Hierarchy
    safe_capacity: Annotated[int, Field(gt=0)] | None = None
    capacity: Annotated[int, Field(gt=0)] | None = None
    enterprise: str | None = None
    meta: dict[str, str | int | float | bool] = {}


class Device(_Strict):
    id: str = ""
    unit: str
    family: Family
    gateway: DeviceId | None = None
    capacity: Annotated[int, Field(gt=0)] | None = None
    # Quantities the device is known to report: admitted beyond
    # ingest.max_quantities_per_device (collector/admission.py).
    quantities: frozenset[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]] = frozenset()
    meta: dict[str, str | int | float | bool] = {}


class RegistryFile(_Strict):
    units: dict[TagText, Unit] = {}
    devices: dict[DeviceId, Device] = {}

    @model_validator(mode="after")
    def _devices_name_known_units(self) -> RegistryFile:
        for device_id, device in self.devices.items():
            if device.unit not in self.units:
                raise ValueError(f"device {device_id!r} names unknown unit {device.unit!r}")
        return self


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a reading from one device goes: its unit, tags and capacity, ready to write."""

    device: str
    family: str | None  # None: unregistered, any family accepted
    unit: str
    tags: str  # encoded line-protocol tag set, device included
    capacity: int | None
    registered: bool


class Registry:
    """An immutable snapshot of the registry; swap a new one in to change it."""

    def __init__(self, units: Mapping[str, Unit], devices: Mapping[str, Device]) -> None:
        self.units = {uid: unit.model_copy(update={"id": uid}) for uid, unit in units.items()}
        self.devices = {did: dev.model_copy(update={"id": did}) for did, dev in devices.items()}
        self._placements: dict[str, Placement] = {
            did: self._place(dev) for did, dev in self.devices.items()
        }
        self._unregistered: dict[str, Placement] = {}

    @classmethod
    def empty(cls) -> Registry:
        return cls({}, {})

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], *, origin: str = "registry") -> Registry:
        try:
            parsed = RegistryFile.model_validate(raw)
        except ValidationError as exc:
            heading = f"invalid registry in {origin}:"
            raise ConfigError(format_validation_errors(exc, heading)) from None
        return cls(parsed.units, parsed.devices)

    @classmethod
    def load(cls, path: Path) -> Registry:
        return cls.from_mapping(read_toml(path, "registry"), origin=str(path))

    def _place(self, device: Device) -> Placement:
        unit = self.units[device.unit]
        tags = {"device": device.id, "unit": unit.id, **unit.hierarchy.as_tags()}
        capacity = device.capacity or unit.capacity
        return Placement(device.id, device.family, unit.id, encode_tags(tags), capacity, True)

    # A flood of made-up device ids must not grow memory without bound.
    _UNREGISTERED_CACHE_MAX = 10_000

    def placement(self, device_id: str) -> Placement:
        """Placement of a device; an unknown one goes to the ``_unregistered`` unit."""
        found = self._placements.get(device_id)
        if found is not None:
            return found
        found = self._unregistered.get(device_id)
        if found is None:
            if len(self._unregistered) >= self._UNREGISTERED_CACHE_MAX:
                self._unregistered.clear()
            tags = encode_tags({"device": device_id, "unit": UNREGISTERED_UNIT})
            found = Placement(device_id, None, UNREGISTERED_UNIT, tags, None, False)
            self._unregistered[device_id] = found
        return found


class RegistryHolder:
    """The registry in force; readers take ``holder.current`` once per batch."""

    def __init__(self, registry: Registry, path: Path | None = None) -> None:
        self.current = registry
        self.path = path
        self.reloads = 0
        self.reload_failures = 0
        self._stamp = self._file_stamp()
        self._seen = self._stamp

    def _file_stamp(self) -> tuple[int, int, int] | None:
        if self.path is None:
            return None
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def reload_if_changed(self, *, settled: bool = True) -> bool:
        """Load the file again if it changed; keep the old registry if the new one is bad.

        With ``settled`` (the watcher), a change is loaded only once the file has looked
        the same on two consecutive checks: an editor that truncates and rewrites the file
        must not be caught half-way (an empty file is a valid, empty registry, which would
        unregister every device).
        """
        stamp = self._file_stamp()
        if self.path is None or stamp is None or stamp == self._stamp:
            self._seen = stamp
            return False
        if settled and stamp != self._seen:
            self._seen = stamp  # changed since the last look: wait for it to settle
            return False
        self._stamp = self._seen = stamp
        try:
            self.current = Registry.load(self.path)
        except ConfigError as exc:
            self.reload_failures += 1
            log.error("registry reload refused, keeping the previous one: %s", exc)
            return False
        self.reloads += 1
        log.info(
            "registry reloaded",
            extra={"units": len(self.current.units), "devices": len(self.current.devices)},
        )
        return True

    def reload_now(self) -> bool:
        """Reload on an operator's request (SIGHUP): no settling."""
        return self.reload_if_changed(settled=False)

    async def watch(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self.reload_if_changed()
