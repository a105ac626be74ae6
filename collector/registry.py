"""The registry: which unit each device belongs to, and where each unit sits in the city.

Devices publish under their own id only; the device -> unit -> hierarchy mapping lives
here, so moving a device or re-cutting grids is an edit of the registry file, picked up
while the collector runs (``RegistryHolder.watch``), never a firmware change. A registry
edit that does not validate, or that leaves the registry empty, is refused whole and the
last good registry stays in force.

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
import contextlib
import gc
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
)

from collector.config import RegistrySettings
from collector.configerrors import Problem, describe, did_you_mean
from collector.configfile import format_validation_errors, read_toml
from collector.errors import ConfigError
from collector.families import FAMILIES, known_family
from collector.lineprotocol import check_tag_text, encode_tags

log = logging.getLogger(__name__)

__all__ = ["FAMILIES", "Family", "Registry"]

Family = Annotated[str, AfterValidator(known_family)]
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


def _unit_id(value: str) -> str:
    # A unit id is one level of its on-site topics (smartunit/v1/units/{unit}/...), and
    # the "_" prefix marks the service's own pseudo-units (_fleet, _collector, ...).
    if value.startswith("_") or any(c in value for c in "/+#") or len(value) > 128:
        raise ValueError(
            'unit ids must not start with "_", nor contain / + #, nor exceed 128 characters'
        )
    return value


TagText = Annotated[str, AfterValidator(_tag_text)]
UnitId = Annotated[str, AfterValidator(_tag_text), AfterValidator(_unit_id)]
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
    # Where the console's map puts the unit (WGS-84 degrees); a unit without both is
    # listed but not placed.
    lat: Annotated[float, Field(ge=-90, le=90)] | None = None
    lon: Annotated[float, Field(ge=-180, le=180)] | None = None
    contact: str | None = None  # who to call on site, shown with the unit's alerts
    runbook: str | None = None  # link to what to do, shown with the unit's alerts
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
    units: dict[UnitId, Unit] = {}
    devices: dict[DeviceId, Device] = {}
    # Display names of hierarchy ids (district, street, ... ids as used in the units'
    # hierarchy): "gusu" = "姑苏区". Ids without one are shown as they are.
    places: dict[str, str] = {}

    def unknown_units(self) -> list[Problem]:
        """Each device naming a unit the file does not define, with the closest one."""
        return [
            Problem(
                ("devices", device_id, "unit"),
                f"unknown unit {device.unit!r}{did_you_mean(device.unit, self.units)}",
            )
            for device_id, device in self.devices.items()
            if device.unit not in self.units
        ]


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

    def __init__(
        self,
        units: Mapping[str, Unit],
        devices: Mapping[str, Device],
        places: Mapping[str, str] | None = None,
    ) -> None:
        self.places = dict(places or {})
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
    def from_mapping(
        cls, raw: Mapping[str, Any], *, origin: str = "registry", path: Path | None = None
    ) -> Registry:
        heading = f"invalid registry in {origin}:"
        try:
            parsed = RegistryFile.model_validate(raw)
        except ValidationError as exc:
            message = format_validation_errors(exc, heading, model=RegistryFile, path=path)
            raise ConfigError(message) from None
        if problems := parsed.unknown_units():
            raise ConfigError(describe(heading, problems, path))
        return cls(parsed.units, parsed.devices, parsed.places)

    @classmethod
    def load(cls, path: Path) -> Registry:
        return cls.from_mapping(read_toml(path, "registry"), origin=str(path), path=path)

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
    """The registry in force; readers take ``holder.current`` once per batch.

    A reload parses and validates the file in a worker thread (a 100,000-device file
    takes seconds, which ingest, alerting and ``/healthz`` must not wait for); only the
    swap happens on the event loop. A registry with no units and no devices is refused,
    keeping the last good one, unless ``allow_empty``: an emptied file would otherwise
    unregister every device at once.
    """

    def __init__(
        self, registry: Registry, path: Path | None = None, *, allow_empty: bool = False
    ) -> None:
        self.current = registry
        self.path = path
        self.allow_empty = allow_empty
        self.reloads = 0
        self.reload_failures = 0
        self._stamp = self._file_stamp()
        self._seen = self._stamp
        self._requested = asyncio.Event()

    @classmethod
    def open(cls, settings: RegistrySettings) -> RegistryHolder:
        """The registry the settings name, checked as every reload is; none without a path."""
        if settings.path is None:
            return cls(Registry.empty())
        registry = cls.load(settings.path, allow_empty=settings.allow_empty)
        return cls(registry, settings.path, allow_empty=settings.allow_empty)

    @staticmethod
    def load(path: Path, *, allow_empty: bool) -> Registry:
        registry = Registry.load(path)
        if not registry.units and not registry.devices and not allow_empty:
            raise ConfigError(
                f"{path}: no units and no devices, which would unregister every device; "
                "set registry.allow_empty = true to accept an empty registry"
            )
        return registry

    def _load_long_lived(self, path: Path) -> Registry:
        """Load in a worker thread, out of the garbage collector's way.

        The thread holds the GIL while it builds, and the collections that the build's
        allocations trigger would each walk the half-built registry (a 100,000-device
        build triggers about six, 0.2-0.3 s each): the loop would wait for each of them.
        Collection pauses while the registry is built; the registry is then frozen out of
        every later collection, as the collector does with what lives as long as the
        process (what is unreachable at that moment stays until the process ends).
        """
        collecting = gc.isenabled()
        gc.disable()
        try:
            registry = self.load(path, allow_empty=self.allow_empty)
            gc.freeze()
        finally:
            if collecting:
                gc.enable()
        return registry

    def _file_stamp(self) -> tuple[int, int, int] | None:
        if self.path is None:
            return None
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _due(self, *, settled: bool) -> Path | None:
        """The file to load if it changed, else None.

        With ``settled`` (the watcher), a change is loaded only once the file has looked
        the same on two consecutive checks: an editor that truncates and rewrites the file
        must not be caught half-way.
        """
        stamp = self._file_stamp()
        if self.path is None or stamp is None or stamp == self._stamp:
            self._seen = stamp
            return None
        if settled and stamp != self._seen:
            self._seen = stamp  # changed since the last look: wait for it to settle
            return None
        self._stamp = self._seen = stamp
        return self.path

    def _refused(self, exc: ConfigError) -> None:
        self.reload_failures += 1
        log.error("registry reload refused, keeping the previous one: %s", exc)

    def _swap(self, registry: Registry) -> None:
        self.current = registry
        self.reloads += 1
        log.info(
            "registry reloaded",
            extra={"units": len(registry.units), "devices": len(registry.devices)},
        )

    def reload_if_changed(self, *, settled: bool = True) -> bool:
        """Load the file again, here and now, if it changed; keep the old one if the new
        one is refused. (The collector's loop uses ``watch``, which loads off the loop.)"""
        path = self._due(settled=settled)
        if path is None:
            return False
        try:
            registry = self.load(path, allow_empty=self.allow_empty)
        except ConfigError as exc:
            self._refused(exc)
            return False
        self._swap(registry)
        return True

    def reload_now(self) -> bool:
        """Reload without waiting for the file to settle."""
        return self.reload_if_changed(settled=False)

    def request_reload(self) -> None:
        """An operator's request (SIGHUP): ``watch`` reloads at once, without settling."""
        self._requested.set()

    async def watch(self, interval_s: float) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval_s):
                    await self._requested.wait()
            requested = self._requested.is_set()
            self._requested.clear()
            path = self._due(settled=not requested)
            if path is None:
                continue
            try:
                registry = await asyncio.to_thread(self._load_long_lived, path)
            except ConfigError as exc:
                self._refused(exc)
                continue
            self._swap(registry)
