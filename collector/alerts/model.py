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

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

# The command centre's five-colour warning, lowest first: the scale the detectors decide
# in (detectors/levels.py has the same, checked by tests/test_structure.py). Kept here as
# well so that the alerts, and whatever delivers them, never load the detectors.
COLOURS: tuple[str, ...] = ("green", "blue", "yellow", "orange", "red")


# The actor of what the service does by itself (opening, escalating, incidents).
SYSTEM = "system"


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
# Every state that awaits an acknowledgement climbs, ``recovered`` too: a red whose
# readings came back to normal before anyone saw it is still an incident nobody handled.
ESCALATION_LEVELS: tuple[str, ...] = ("grid", "community", "street", "district", "city")
ESCALATES_FROM = ACK_FROM


# Units of the registry never start with "_": it marks the service's own pseudo-units
# (_fleet, _collector, and _unregistered for devices the registry does not know).
PSEUDO_UNIT_PREFIX = "_"


def is_pseudo_unit(unit: str) -> bool:
    """A unit of the service's own (fleet, collector, unregistered devices), or none."""
    return not unit or unit.startswith(PSEUDO_UNIT_PREFIX)


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
    # The escalation level reached, and since when its acknowledgement deadline runs
    # (None: since the alert started).
    level: str = ESCALATION_LEVELS[0]
    level_since_ms: int | None = None
    threshold: float | None = None  # the configured value the colour was raised at
    receivers: list[str] = field(default_factory=list)  # every receiver that took it
    # The leading alert of the incident it joined; None when it leads its own.
    incident_leader: int | None = None
    incident_colour: str | None = None  # the worst colour among the incident's alerts
    toggles_ms: list[int] = field(default_factory=list)  # condition toggles, flap window
    flapping: bool = False
    dispatched: bool = False  # a receiver has taken one of its events
    acknowledged_colour: str | None = None  # the colour someone last acknowledged
    acknowledged_by: str | None = None  # who did
    resolved_at_ms: int | None = None
    # The value at the worst colour reached: what a recovered alert was at its height.
    peak: float | None = None
    peak_colour: str | None = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def note_peak(self, colour: str, value: float | None, threshold: float | None) -> None:
        """Keep the value at the worst colour reached (the one furthest past its limit)."""
        if value is None:
            return
        if self.peak is not None and self.peak_colour in COLOURS:
            rank, peak_rank = COLOURS.index(colour), COLOURS.index(self.peak_colour)
            if rank < peak_rank:
                return
            if (
                rank == peak_rank
                and threshold is not None
                and abs(value - threshold) < abs(self.peak - threshold)
            ):
                return
        self.peak, self.peak_colour = value, colour

    @property
    def incident(self) -> int:
        """The incident this alert belongs to: the id of the unit's leading alert."""
        return self.id if self.incident_leader is None else self.incident_leader

    @property
    def leads_incident(self) -> bool:
        return self.incident == self.id

    @property
    def incident_scope(self) -> tuple[str, str]:
        """What the alerts of one incident share: their unit of the registry. Outside the
        registry (devices it does not know, the service's own alarms) alerts share no
        place, only their device: acknowledging one device's must not cover another's."""
        return self.unit, self.fingerprint.device if is_pseudo_unit(self.unit) else ""

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
            "incident_colour": self.incident_colour or self.colour,
            "threshold": self.threshold,
            "level": self.level,
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


def opened_by(
    detection: Detection, fingerprint: Fingerprint, value: float | None, hierarchy: dict[str, str]
) -> tuple[Alert, AlertEvent]:
    """A new alert raised by a detection (numbered by the store), and its first event."""
    alert = Alert(
        id=0,
        fingerprint=fingerprint,
        state=State.OPEN,
        colour=detection.colour,
        family=detection.family,
        unit=detection.unit,
        hierarchy=hierarchy,
        value=value,
        started_at_ms=detection.ts_ms,
        updated_at_ms=detection.ts_ms,
        condition_active=True,
        condition_changed_at_ms=detection.ts_ms,
        level=ESCALATION_LEVELS[0],
        level_since_ms=detection.ts_ms,
        threshold=detection.threshold,
        peak=value,
        peak_colour=detection.colour,
    )
    opened = AlertEvent(
        0,
        1,
        EventType.OPENED,
        detection.ts_ms,
        SYSTEM,
        f"{detection.detector}: {detection.colour}",
        alert.state,
        alert.colour,
        value,
    )
    return alert, opened


# How an alert's bookkeeping fields are stored: one JSON object, each field under its
# own name (the incident's leader under "incident"). A field left at None is left out, so
# the object reads the same to every version of this code that wrote such objects.
_STORED_AS = {"incident_leader": "incident"}
_BOOKKEEPING = (
    "level",
    "level_since_ms",
    "threshold",
    "receivers",
    "incident_leader",
    "incident_colour",
    "toggles_ms",
    "flapping",
    "dispatched",
    "acknowledged_colour",
    "acknowledged_by",
    "resolved_at_ms",
    "peak",
    "peak_colour",
)


def bookkeeping(alert: Alert) -> dict[str, Any]:
    """The alert's bookkeeping fields as the stored JSON object."""
    stored = {_STORED_AS.get(name, name): getattr(alert, name) for name in _BOOKKEEPING}
    return {key: value for key, value in stored.items() if value is not None}


def with_bookkeeping(alert: Alert, stored: Mapping[str, Any]) -> Alert:
    """The alert with the bookkeeping fields read back from their stored JSON object;
    a key missing from it (written before the field existed) keeps the field's default."""

    def optional(key: str, kind: Callable[[Any], T]) -> T | None:
        found = stored.get(key)
        return None if found is None else kind(found)

    alert.level = str(stored.get("level", ESCALATION_LEVELS[0]))
    alert.level_since_ms = optional("level_since_ms", int)
    alert.threshold = optional("threshold", float)
    alert.receivers = [str(r) for r in stored.get("receivers", ())]
    alert.incident_leader = optional("incident", int)
    alert.incident_colour = optional("incident_colour", str)
    alert.toggles_ms = [int(t) for t in stored.get("toggles_ms", ())]
    alert.flapping = bool(stored.get("flapping", False))
    alert.dispatched = bool(stored.get("dispatched", False))
    alert.acknowledged_colour = optional("acknowledged_colour", str)
    alert.acknowledged_by = optional("acknowledged_by", str)
    alert.resolved_at_ms = optional("resolved_at_ms", int)
    alert.peak = optional("peak", float)
    alert.peak_colour = optional("peak_colour", str)
    return alert


class Detection(Protocol):
    """What the alert book takes from a detector: a colour raised, changed or cleared for
    a fingerprint, or a device gone silent or resumed (collector/detection.py's
    DetectionEvent is one)."""

    @property
    def kind(self) -> str: ...  # "raised", "changed", "cleared", "silent" or "resumed"
    @property
    def detector(self) -> str: ...
    @property
    def device(self) -> str: ...
    @property
    def family(self) -> str: ...
    @property
    def quantity(self) -> str: ...
    @property
    def unit(self) -> str: ...
    @property
    def colour(self) -> str: ...
    @property
    def value(self) -> float: ...  # NaN when there is none
    @property
    def ts_ms(self) -> int: ...
    @property
    def threshold(self) -> float | None: ...
