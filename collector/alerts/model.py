"""Alerts and their lifecycle: the five-step loop as a state machine.

    detect      -> open          a detector raised a colour for a fingerprint
    dispatch    -> dispatched    a work order reached a receiver
    handle      -> acknowledged  someone is on it
    feed back   -> resolved      the handler reports it fixed
    verify      -> closed        the readings stayed normal for the verification window
                                 and the device is alive

Beside the main line:

- ``recovered``: the condition cleared by itself before anyone acknowledged; the alert
  still needs acknowledgement (and feedback) before it can be verified and closed;
- ``reopened``: the readings turned abnormal again while a resolution was being verified.

One alert per fingerprint (device, quantity, detector) until it is closed; the colour may
rise and fall inside one alert. Every change is an event with time, actor and note, kept
forever as the audit trail.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from detectors.levels import COLOURS


class State(StrEnum):
    OPEN = "open"
    DISPATCHED = "dispatched"
    ACKNOWLEDGED = "acknowledged"
    RECOVERED = "recovered"
    RESOLVED = "resolved"
    REOPENED = "reopened"
    CLOSED = "closed"


ACTIVE_STATES = frozenset(State) - {State.CLOSED}

# Which states each workflow action may start from (anything else is refused).
ACK_FROM = frozenset({State.OPEN, State.DISPATCHED, State.RECOVERED, State.REOPENED})
RESOLVE_FROM = frozenset(
    {State.OPEN, State.DISPATCHED, State.ACKNOWLEDGED, State.RECOVERED, State.REOPENED}
)
DISPATCH_FROM = frozenset({State.OPEN, State.REOPENED})


class EventType(StrEnum):
    OPENED = "opened"
    COLOUR_CHANGED = "colour_changed"
    DISPATCHED = "dispatched"
    ACKNOWLEDGED = "acknowledged"
    RECOVERED = "recovered"
    CONDITION_CLEARED = "condition_cleared"
    CONDITION_RETURNED = "condition_returned"
    RESOLVED = "resolved"
    REOPENED = "reopened"
    CLOSED = "closed"
    COMMENTED = "commented"
    ESCALATED = "escalated"
    FLAPPING = "flapping"
    # Recorded on an incident's leading alert, for what its other alerts do: receivers
    # that take one work order per incident hear of them there.
    INCIDENT_JOINED = "incident_joined"
    INCIDENT_ROSE = "incident_rose"
    INCIDENT_ESCALATED = "incident_escalated"


# Condition toggles: counted for flap detection, muted while an alert flaps.
TOGGLES = frozenset(
    {EventType.RECOVERED, EventType.CONDITION_CLEARED, EventType.CONDITION_RETURNED}
)


# The five-level response: an unacknowledged alert climbs one level per missed deadline.
ESCALATION_LEVELS: tuple[str, ...] = ("grid", "community", "street", "district", "city")
ESCALATES_FROM = frozenset({State.OPEN, State.DISPATCHED, State.REOPENED})


@dataclass(frozen=True)
class Fingerprint:
    device: str
    quantity: str
    detector: str

    def key(self) -> str:
        return f"{self.device}\x1f{self.quantity}\x1f{self.detector}"


@dataclass
class Alert:
    id: int
    fingerprint: Fingerprint
    state: State
    colour: str
    family: str
    unit: str
    hierarchy: dict[str, str]
    value: float | None
    started_at_ms: int
    updated_at_ms: int
    condition_active: bool = True
    condition_changed_at_ms: int = 0
    acknowledged: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def incident(self) -> int:
        """The incident this alert belongs to: the id of the unit's leading alert."""
        return int(self.extra.get("incident", self.id))

    @property
    def leads_incident(self) -> bool:
        return self.incident == self.id

    def summary(self, public_url: str) -> dict[str, Any]:
        """The fields every outside view of an alert shows (webhooks, API)."""
        return {
            "id": self.id,
            "state": self.state.value,
            "colour": self.colour,
            "family": self.family,
            "device": self.fingerprint.device,
            "unit": self.unit,
            "hierarchy": self.hierarchy,
            "quantity": self.fingerprint.quantity,
            "detector": self.fingerprint.detector,
            "value": self.value,
            "incident": self.incident,
            "incident_colour": self.extra.get("incident_colour", self.colour),
            "threshold": self.extra.get("threshold"),
            "level": self.extra.get("level"),
            "started_at": iso_time(self.started_at_ms),
            "updated_at": iso_time(self.updated_at_ms),
            "url": f"{public_url.rstrip('/')}/alerts/{self.id}",
        }


def ack_due_at_ms(alert: Alert, ack_deadlines_s: Mapping[Any, float]) -> int | None:
    """When an alert still waiting for acknowledgement is due; None when none is awaited."""
    deadline = ack_deadlines_s.get(alert.colour)
    if deadline is None or alert.state not in ESCALATES_FROM:
        return None
    return alert.started_at_ms + round(deadline * 1000)


def within(hierarchy: Mapping[str, str], prefix: str) -> bool:
    """Whether a unit's city/district/... path lies under ``prefix``, segment by segment."""
    path = "/".join(hierarchy.values())
    prefix = prefix.strip("/")
    return not prefix or path == prefix or path.startswith(prefix + "/")


def worst_level(alerts: Iterable[Alert]) -> int:
    """The highest colour among alerts, as a level (0 green .. 4 red); green for none."""
    return max((COLOURS.index(a.colour) for a in alerts), default=0)


def iso_time(ms: int | None) -> str | None:
    """RFC 3339 in UTC with milliseconds, as every payload and page shows times."""
    if ms is None:
        return None
    return (
        datetime.fromtimestamp(ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


@dataclass(frozen=True)
class AlertEvent:
    alert_id: int
    seq: int  # per alert, from 1: receivers keep one alert's events in order with it
    type: EventType
    at_ms: int
    actor: str
    note: str
    state: State  # the alert's state after the event
    colour: str
    value: float | None

    @property
    def id(self) -> str:
        """The idempotency key: stable across retries and restarts."""
        return f"{self.alert_id}-{self.seq}"


@dataclass(frozen=True)
class Silence:
    """A maintenance window: alerts of this unit or device notify nobody until it ends."""

    id: int
    unit: str | None
    device: str | None
    starts_ms: int
    ends_ms: int
    actor: str
    reason: str

    def covers(self, alert: Alert, now_ms: int) -> bool:
        if not self.starts_ms <= now_ms < self.ends_ms:
            return False
        return (self.device is not None and self.device == alert.fingerprint.device) or (
            self.unit is not None and self.unit == alert.unit
        )
