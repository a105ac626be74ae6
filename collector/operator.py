"""Alerts about the collector itself: the same loop as the devices' alerts.

An ``OperatorAlarm`` watches one figure, measured once per stats interval: it raises an
orange alert when the figure has been at or above its limit for ``intervals``
measurements in a row, and clears it once the figure falls below half the limit
(hysteresis, so a figure hovering on the line does not flap).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from collector.detection import DetectionEvent, EventKind

log = logging.getLogger(__name__)

OPERATOR_FAMILY = "system"
OPERATOR_UNIT = "_collector"


@dataclass(kw_only=True)
class OperatorAlarm:
    detector: str  # the alert's detector name, e.g. "collector-behind"
    quantity: str  # what is measured, e.g. "arrival_age_s"
    limit: float
    collector: str  # the collector's client id: the alert's "device"
    intervals: int = 1
    raised: bool = False
    _over: int = 0

    def update(self, value: float, now_ms: int) -> list[DetectionEvent]:
        self._over = self._over + 1 if value >= self.limit else 0
        if not self.raised and self._over >= self.intervals:
            self.raised = True
            log.warning("operator alert raised", extra={"alert": self.detector, "value": value})
            return [self._event("raised", "orange", "green", value, now_ms)]
        if self.raised and value < self.limit / 2:
            self.raised = False
            log.info("operator alert cleared", extra={"alert": self.detector, "value": value})
            return [self._event("cleared", "green", "orange", value, now_ms)]
        return []

    def _event(
        self, kind: EventKind, colour: str, previous: str, value: float, now_ms: int
    ) -> DetectionEvent:
        return DetectionEvent(
            kind,
            self.detector,
            self.collector,
            OPERATOR_FAMILY,
            self.quantity,
            OPERATOR_UNIT,
            colour,
            previous,
            value,
            now_ms,
            threshold=self.limit,
        )
