"""Quantity admission: how many series one device, and all devices together, may create.

Every (device, quantity) a reading names is a series: an InfluxDB field key of its
family's measurement and a set of detector state. Chem devices name their quantities
themselves, so without a bound one device (a firmware bug, a hostile client) could create
field keys and detector series without end, and every later query over them (the warm
start reads history) grows with it.

So a series is admitted once, on first sight, under two caps:

- per device, ``ingest.max_quantities_per_device`` quantities beyond the ones already
  known: the protocol's own fields (people, vehicles, occupied), the quantities the
  rule files watch, and the ones the registry lists for the device;
- per collector, ``detection.max_series`` series in all.

A reading keeps its admitted quantities; the ones over a cap are dropped from it with a
rejection (``too_many_quantities`` or ``too_many_series``), and a reading left with no
quantity is not stored at all. Both decoders (``Decoder`` and the fast path) ask the
same admission, so they agree. What was admitted stays admitted for the life of the
process; the detectors' saved series are admitted again at start.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from collector.protocol import Reading, Rejection
from collector.registry import Registry

# Fields that are bookkeeping, not measurements: never a series, never capped.
NOT_QUANTITIES = frozenset({"seq", "capacity", "free", "interval_s", "safe_capacity"})
PROTOCOL_QUANTITIES = frozenset({"people", "vehicles", "occupied"})
MAX_NAMES_IN_DETAIL = 10


@dataclass(frozen=True, slots=True)
class OverCap:
    """A cap reached for the first time: what an operator alert is raised for."""

    reason: str  # "too_many_quantities" (per device) or "too_many_series" (collector)
    device: str
    admitted: int  # the device's quantities, or the collector's series


@dataclass
class QuantityAdmission:
    max_per_device: int
    max_series: int
    known: frozenset[str] = frozenset()  # the rule files' quantities
    series: int = 0
    _names: dict[str, set[str]] = field(default_factory=dict)  # device -> admitted
    _extra: dict[str, int] = field(default_factory=dict)  # device -> admitted unknown
    _reported: set[str] = field(default_factory=set)  # devices reported over their cap
    _full_reported: bool = False
    # caps reached since the last ``take_over_cap``: one each per device, one for the
    # collector (bounded: a device over its cap has max_per_device quantities admitted)
    _over_cap: list[OverCap] = field(default_factory=list)

    def admitted(self, device: str) -> set[str] | None:
        """The quantities admitted for ``device`` (do not change it), or None."""
        return self._names.get(device)

    @property
    def admitted_by_device(self) -> Mapping[str, set[str]]:
        """Every device's admitted quantities: the same dict for the admission's life,
        so a reader may keep it (the fast path's check per message)."""
        return self._names

    def seed(self, series: Iterable[tuple[str, str]], registry: Registry) -> None:
        """Admit (device, quantity) pairs already known (the detectors' saved series)."""
        for device, quantity in series:
            self._admit(device, quantity, registry, capped=False)

    def admit(
        self, reading: Reading, registry: Registry
    ) -> tuple[Reading | None, Rejection | None]:
        """The reading with its admitted quantities (None: none left), and the rejection
        of what was dropped (None: nothing)."""
        names = self._names.get(reading.device)
        if names is not None and names.issuperset(reading.fields):
            return reading, None
        dropped: dict[str, list[str]] = {}
        for name in reading.fields:
            if names is not None and name in names:
                continue
            reason = self._admit(reading.device, name, registry, capped=True)
            if reason is not None:
                dropped.setdefault(reason, []).append(name)
            names = self._names.get(reading.device)
        if not dropped:
            return reading, None
        refused = {name for names_ in dropped.values() for name in names_}
        kept = {k: v for k, v in reading.fields.items() if k not in refused}
        reason = "too_many_series" if "too_many_series" in dropped else "too_many_quantities"
        shown = sorted(refused)[:MAX_NAMES_IN_DETAIL]
        more = f" and {len(refused) - len(shown)} more" if len(refused) > len(shown) else ""
        limit = (
            f"the collector's {self.max_series} series (detection.max_series)"
            if reason == "too_many_series"
            else f"{self.max_per_device} quantities beyond the known ones per device "
            "(ingest.max_quantities_per_device)"
        )
        rejection = Rejection(
            reason,
            f"quantities {', '.join(shown)}{more} not stored: over {limit}",
            reading.family,
            reading.device,
        )
        if not any(name not in NOT_QUANTITIES for name in kept):
            return None, rejection
        return reading._replace(fields=kept), rejection

    def admit_all(self, device: str, fields: Collection[str], registry: Registry) -> bool:
        """Admit every quantity of a reading at once when no cap refuses any of them
        (True); otherwise change nothing (False), leaving the refusal to ``admit``.

        A device's first reading names all its quantities together: checking the caps
        for the lot and then admitting them costs one pass, where ``admit`` takes each
        name through every check. The outcome is ``admit``'s when nothing is dropped.
        """
        names = self._names.get(device)
        new = [
            name
            for name in fields
            if name not in NOT_QUANTITIES and (names is None or name not in names)
        ]
        if not new:
            if names is not None:
                names.update(fields)
            return True
        if self.series + len(new) > self.max_series:
            return False
        unknown = sum(not self._is_known(device, name, registry) for name in new)
        extra = self._extra.get(device, 0)
        if unknown and extra + unknown > self.max_per_device:
            return False
        if names is None:
            # as ``admit`` does: bookkeeping names before the first quantity are not kept
            listed_names = list(fields)
            first = listed_names.index(new[0])
            self._names[device] = set(listed_names[first:])
        else:
            names.update(fields)
        self.series += len(new)
        if unknown:
            self._extra[device] = extra + unknown
        return True

    def _admit(self, device: str, name: str, registry: Registry, *, capped: bool) -> str | None:
        """Admit one new series; the rejection reason when a cap refuses it."""
        names = self._names.get(device)
        if names is not None and name in names:
            return None
        if name in NOT_QUANTITIES:  # never a series; remembered for the quick check only
            if names is not None:
                names.add(name)
            return None
        if capped and self.series >= self.max_series:
            if not self._full_reported:
                self._full_reported = True
                self._over_cap.append(OverCap("too_many_series", device, self.series))
            return "too_many_series"
        unknown = not self._is_known(device, name, registry)
        if capped and unknown and self._extra.get(device, 0) >= self.max_per_device:
            if device not in self._reported:
                self._reported.add(device)
                self._over_cap.append(
                    OverCap("too_many_quantities", device, len(names) if names else 0)
                )
            return "too_many_quantities"
        if names is None:
            names = self._names[device] = set()
        names.add(name)
        self.series += 1
        if unknown:
            self._extra[device] = self._extra.get(device, 0) + 1
        return None

    def _is_known(self, device: str, name: str, registry: Registry) -> bool:
        if name in PROTOCOL_QUANTITIES or name in self.known:
            return True
        listed = registry.devices.get(device)
        return listed is not None and name in listed.quantities

    def take_over_cap(self) -> list[OverCap]:
        """Caps reached since the last call."""
        found, self._over_cap = self._over_cap, []
        return found
