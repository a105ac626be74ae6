"""Incidents: one unit's open alerts, led by its first; what a member's change tells the leader.

Outside the registry's units (a device it does not know, the service's own alarms) an
incident is one device's open alerts: devices there share no place (``Alert.incident_scope``).

A receiver that groups incidents hears only the leader. The leader therefore records what
its members do that someone must know (one joined, one rose, one escalated), and it
awaits acknowledgement again while a member nobody has acknowledged is in it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from collector.alerts.model import COLOURS, SYSTEM, Alert, AlertEvent, EventType, State


@dataclass
class Change:
    alert: Alert
    events: list[AlertEvent]
    next_seq: int
    # The alert rose above the colour someone acknowledged: that acknowledgement is void.
    ack_voided: bool = False

    def record(self, kind: EventType, at_ms: int, actor: str, note: str = "") -> None:
        self.alert.updated_at_ms = max(self.alert.updated_at_ms, at_ms)
        self.events.append(
            AlertEvent(
                self.alert.id,
                self.next_seq,
                kind,
                at_ms,
                actor,
                note,
                self.alert.state,
                self.alert.colour,
                self.alert.value,
            )
        )
        self.next_seq += 1


def leader_of(alert: Alert, incident: Sequence[Alert]) -> Alert | None:
    """The active leader of a member's incident; None for a leader itself, or when
    the leader is closed (its incident is over)."""
    if alert.leads_incident:
        return None
    return next((a for a in incident if a.id == alert.incident), None)


def tell_leader(change: Change, lead: Change) -> bool:
    """Record on the incident's leader what a member's change means for the incident:
    it joined, it rose, it escalated; whether there was anything to record. Receivers
    that group incidents hear only the leader, and take it as soon as the incident
    matches them: these events are how a red alert in a yellow incident reaches an
    orange-only receiver."""
    member, leader = change.alert, lead.alert
    before = leader.incident_colour or leader.colour
    rose = COLOURS.index(member.colour) > COLOURS.index(before)
    what = f"alert {member.id} ({member.fingerprint.device} {member.fingerprint.quantity})"
    told: list[tuple[EventType, int, str]] = []
    for event in change.events:
        if event.type == EventType.OPENED:
            note = f"{what} joined, {event.colour}"
            if rose:
                note += f": incident {before} -> {member.colour}"
            told.append((EventType.INCIDENT_JOINED, event.at_ms, note))
        elif event.type == EventType.ESCALATED:
            told.append((EventType.INCIDENT_ESCALATED, event.at_ms, f"{what} {event.note}"))
        elif event.type == EventType.COLOUR_CHANGED and (rose or change.ack_voided):
            note = f"{what} {event.note}"
            if rose:
                note += f": incident {before} -> {member.colour}"
            if change.ack_voided:
                note += "; it needs acknowledgement again"
            told.append((EventType.INCIDENT_ROSE, event.at_ms, note))
    if not told:
        return False
    if leader.state == State.ACKNOWLEDGED and not member.acknowledged:
        # The leader was acknowledged for the incident as it was then; what joined or
        # rose since has not been seen by anyone: the incident needs a fresh one.
        await_acknowledgement(leader, told[0][1])
    for kind, at_ms, note in told:
        lead.record(kind, at_ms, SYSTEM, note)
    return True


def await_acknowledgement(alert: Alert, at_ms: int) -> None:
    """An acknowledged alert needs someone again; its escalation clock starts now."""
    alert.acknowledged = False
    if not alert.condition_active:
        alert.state = State.RECOVERED
    else:
        alert.state = State.DISPATCHED if alert.dispatched else State.OPEN
    alert.level_since_ms = at_ms
