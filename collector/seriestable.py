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

from collections.abc import Sequence

from collector.admission import NOT_QUANTITIES

# (device, family, quantity): a plain tuple of strings, which the garbage collector stops
# tracking; tens of thousands of objects would lengthen every full collection, a pause
# that alerts wait through.
Series = tuple[str, str, str]


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
        if found is None:
            if quantity not in NOT_QUANTITIES and len(self.info) >= self.max_series:
                self.refused += 1  # not remembered either
                return -1
            found = series_of[quantity] = -1 if quantity in NOT_QUANTITIES else len(self.info)
            if found >= 0:
                self.info.append((device, family, quantity))
        return found

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
