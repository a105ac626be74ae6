"""What the detectors decide: a series changing colour, a device falling silent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SYSTEM_FAMILY = "system"  # alerts about the service itself, not about a device's readings

EventKind = Literal["raised", "changed", "cleared", "silent", "resumed"]


@dataclass(frozen=True)
class DetectionEvent:
    kind: EventKind
    detector: str  # rule name, "statistical", or "silence"
    device: str  # for a silent gateway: the gateway id
    family: str
    quantity: str
    unit: str
    colour: str
    previous_colour: str
    value: float
    ts_ms: int
    score: float = 0.0
    # The configured value the colour was raised at, in the quantity's unit (a capacity
    # rule's fraction times the site's capacity); None for statistical detections.
    threshold: float | None = None
