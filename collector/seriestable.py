"""The detectors' series: which (device, quantity) each row of their state arrays is.

Each (device, quantity) the detectors judge is one series, numbered in order of first
sight. The number indexes every detector's state arrays, so it never changes while the
service runs and is saved with that state. Devices are numbered the same way (the
silence watch keeps its state per device). A field that is not a quantity (``seq``,
a text) is remembered as -1, so that a reading asks one lookup per field either way.

Beyond ``max_series`` a new series is neither numbered nor remembered, only counted in
``refused``: device or quantity names without end must not grow the table.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

from collector.admission import NOT_QUANTITIES
from collector.families.base import Reading

# (device, family, quantity): a plain tuple of strings, which the garbage collector stops
# tracking; tens of thousands of objects would lengthen every full collection, a pause
# that alerts wait through.
Series = tuple[str, str, str]


class Gathered(NamedTuple):
    """A batch's judged fields as series, times and values, with what came new."""

    series: list[int]  # per field that is a series within the cap
    times: list[float]  # device time, epoch seconds
    values: list[int | float]
    device_ids: list[int]  # per reading
    device_times: list[float]
    new_series: list[int]  # numbered by this batch, in order


class SeriesTable:
    def __init__(self, max_series: int) -> None:
        self.max_series = max_series
        self.refused = 0  # readings of series over max_series: not judged
        self.info: list[Series] = []  # series id -> (device, family, quantity)
        # device -> (its id, {field: series id, -1 for a field that is not a quantity}):
        # what judging asks of every reading, one lookup per device and one per field.
        self.devices: dict[str, tuple[int, dict[str, int]]] = {}
        self.device_names: list[str] = []  # device id -> device

    def __len__(self) -> int:
        return len(self.info)

    def device(self, device: str) -> tuple[int, dict[str, int]]:
        """The device's id and its fields' series ids, the device numbered on first sight."""
        found = self.devices.get(device)
        if found is None:
            found = self.devices[device] = (len(self.devices), {})
            self.device_names.append(device)
        return found

    def series_id(self, device: str, family: str, quantity: str) -> int:
        """A field's series id, the series created on first sight; -1: not a quantity."""
        series_of = self.device(device)[1]
        found = series_of.get(quantity)
        return self.add(series_of, device, family, quantity) if found is None else found

    def add(self, series_of: dict[str, int], device: str, family: str, quantity: str) -> int:
        """``series_id`` of a field the device's ``series_of`` (from ``devices``) lacks."""
        if quantity in NOT_QUANTITIES:
            series_of[quantity] = -1
            return -1
        found = len(self.info)
        if found >= self.max_series:
            self.refused += 1  # not remembered either
            return -1
        series_of[quantity] = found
        self.info.append((device, family, quantity))
        return found

    def gather(self, readings: Iterable[Reading]) -> Gathered:
        """Every reading's fields as series (numbering new ones), times and values."""
        out = Gathered([], [], [], [], [], [])
        add_series, add_time, add_value = out.series.append, out.times.append, out.values.append
        add_device, add_device_time = out.device_ids.append, out.device_times.append
        devices, add = self.devices, self.add
        for family, device, ts_ms, fields, _ in readings:
            seconds = ts_ms / 1000.0
            device_id, series_of = devices.get(device) or self.device(device)
            add_device(device_id)
            add_device_time(seconds)
            for quantity, value in fields.items():
                found = series_of.get(quantity)
                if found is None:
                    found = add(series_of, device, family, quantity)
                    if found >= 0:
                        out.new_series.append(found)
                if found >= 0:
                    add_series(found)
                    add_time(seconds)
                    add_value(value)
        return out

    def device_family(self, device: str) -> str:
        """The family a device's readings came as ("" before any quantity was judged)."""
        found = self.devices.get(device)
        series = next((s for s in found[1].values() if s >= 0), None) if found else None
        return "" if series is None else self.info[series][1]

    def device_id_of(self, series: int) -> int:
        return self.devices[self.info[series][0]][0]

    def series_of_device(self, device_id: int) -> list[int]:
        """Every series of a device."""
        return [n for n in self.devices[self.device_names[device_id]][1].values() if n >= 0]

    def names(self) -> list[tuple[str, str]]:
        """(device, quantity) of every series."""
        return [(device, quantity) for device, _, quantity in self.info]

    def saved(self) -> dict[str, list[Series] | list[str]]:
        """What ``restore`` takes back: the numbering, saved beside the detectors' state."""
        return {"series": self.info, "devices": self.device_names}

    def restore(self, series: Sequence[Sequence[str]], devices: Sequence[str]) -> None:
        self.info = [(device, family, quantity) for device, family, quantity in series]
        self.device_names = list(devices)
        self.devices = {d: (n, {}) for n, d in enumerate(self.device_names)}
        for n, (device, _, quantity) in enumerate(self.info):
            self.device(device)[1][quantity] = n
