"""Devices, gateways and the fleet that stopped reporting, as detection events.

The silence watch (detectors/rules/silence.py) keeps, per device, when it last reported
and how often it does; this groups devices by their gateway (from the registry), holds
the checks back while a backlog is being caught up (every device would look silent;
none is), and turns what the watch reports into events.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import numpy as np

from collector.detectionevent import SYSTEM_FAMILY, DetectionEvent, EventKind
from collector.registry import Registry
from detectors.rules.silence import SilenceWatch

log = logging.getLogger(__name__)

SILENT_DEVICE = "yellow"
SILENT_GATEWAY = "orange"  # a gateway takes many devices with it
SILENT_FLEET = "red"  # most of the fleet at once: the command centre is blind
FLEET = "_fleet"  # the silent fleet's "device": no device id starts with "_"


class SilenceCheck:
    def __init__(self, watch: SilenceWatch) -> None:
        self.watch = watch
        self._gateway_names: list[str] = []
        self._gateway_index: dict[str, int] = {}
        self._grouped_by: Registry | None = None
        self._grouped = 0  # devices (in order of first sight) already given their gateway
        self._lags: list[float] = []  # how old the readings of each batch were on arrival
        self.catching_up = False

    def note_lag(self, lag_s: float) -> None:
        """How old a batch's readings were when they arrived (median), in seconds."""
        self._lags.append(lag_s)

    def alive(self, device: str, device_id: int | None, now_s: float) -> bool:
        """Whether a device's newest reading is within its silence timeout; for a
        gateway, any of its devices'; for the fleet, whether it was not silent at the
        last check. What an alert needs before it can be verified closed."""
        if device == FLEET:
            return not self.watch.fleet_silent
        if device_id is not None:
            return bool(self.watch.alive(device_id, now_s))
        group = self._gateway_index.get(device)
        return group is not None and self.watch.group_alive(group, now_s)

    def check(
        self,
        now_s: float,
        registry: Registry,
        device_names: Sequence[str],
        family_of: Callable[[str], str],
    ) -> list[DetectionEvent]:
        """Devices and gateways that went quiet, or came back, since the last check.

        ``device_names``: every device in order of first sight (its id is its index);
        ``family_of``: the family a device's readings came as, for a device the registry
        does not know (its silence alert is handled by that family's people)."""
        if self._grouped_by is not registry:  # a new registry: every device again
            self._gateway_names, self._gateway_index = [], {}
            self._grouped_by, self._grouped = registry, 0
        if self._grouped < len(device_names):  # devices seen since the last check
            new = device_names[self._grouped :]
            groups = []
            for device in new:
                known = registry.devices.get(device)
                gateway = known.gateway if known is not None else None
                if gateway and gateway not in self._gateway_index:
                    self._gateway_index[gateway] = len(self._gateway_names)
                    self._gateway_names.append(gateway)
                groups.append(self._gateway_index[gateway] if gateway else -1)
            self.watch.set_groups(np.arange(self._grouped, len(device_names)), groups)
            self._grouped = len(device_names)
        lags, self._lags = self._lags, []
        if lags and float(np.median(lags)) > self.watch.allowance_s:
            # The readings we are taking in are old: we are catching up a backlog (after an
            # outage of ours or of the network). Every device would look silent; none is.
            if not self.catching_up:
                log.warning(
                    "catching up a backlog: silence checks wait",
                    extra={"median_lag_s": round(float(np.median(lags)), 1)},
                )
            self.catching_up = True
            return []
        self.catching_up = False
        report = self.watch.check(now_s)
        ts_ms = round(now_s * 1000)
        events: list[DetectionEvent] = []

        def add(
            kind: EventKind,
            name: str,
            family: str,
            unit: str,
            colour: str,
            *,
            quantity: str = "",
            value: float = math.nan,
        ) -> None:
            previous = colour if kind == "resumed" else "green"
            shown = "green" if kind == "resumed" else colour
            events.append(
                DetectionEvent(
                    kind, "silence", name, family, quantity, unit, shown, previous, value, ts_ms
                )
            )

        kind: EventKind
        if report.fleet_started or report.fleet_recovered:
            kind = "silent" if report.fleet_started else "resumed"
            add(
                kind,
                FLEET,
                SYSTEM_FAMILY,
                "",
                SILENT_FLEET,
                quantity="silent_devices",
                value=report.quiet,
            )
            if report.fleet_started:
                log.error(
                    "most of the fleet stopped reporting at once: one alert stands for it",
                    extra={"silent_devices": report.quiet},
                )

        for device_id in report.started.tolist() + report.recovered.tolist():
            device = device_names[device_id]
            known = registry.devices.get(device)
            kind = "silent" if device_id in report.started else "resumed"
            add(
                kind,
                device,
                known.family if known else family_of(device),
                registry.placement(device).unit,
                SILENT_DEVICE,
            )
        for group in report.groups_started.tolist() + report.groups_recovered.tolist():
            kind = "silent" if group in report.groups_started else "resumed"
            add(kind, self._gateway_names[group], "gateway", "", SILENT_GATEWAY)
        return events
