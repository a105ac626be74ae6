"""Flapping: an alert whose condition toggles too often notifies its state, not each toggle."""

from __future__ import annotations

from collector.alerts.incidents import Change
from collector.alerts.model import SYSTEM, TOGGLES, AlertEvent, EventType


def watch_flapping(change: Change, *, window_ms: int, toggles_to_flap: int) -> None:
    """Mark an alert flapping when its condition toggles too often; unmark when calm."""
    alert = change.alert
    toggles = list(alert.toggles_ms)
    toggles += [e.at_ms for e in change.events if e.type in TOGGLES]
    if not toggles:
        return
    horizon = max(toggles) - window_ms
    toggles = [t for t in toggles if t > horizon]
    alert.toggles_ms = toggles
    flapping = len(toggles) >= toggles_to_flap
    if flapping != alert.flapping:
        alert.flapping = flapping
        change.record(
            EventType.FLAPPING,
            max(toggles),
            SYSTEM,
            f"{len(toggles)} toggles in {window_ms / 1000:.0f} s: "
            + ("notifying the state, not each toggle" if flapping else "calm again"),
        )


def notifiable(change: Change, silenced: bool) -> list[AlertEvent]:
    """The events that may notify: none under a silence, no toggles while flapping."""
    if silenced:
        return []
    if change.alert.flapping:
        return [e for e in change.events if e.type not in TOGGLES]
    return change.events
