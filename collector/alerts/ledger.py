"""The alert ledger: how a change to an alert is decided, written and told.

A change is written in one transaction with its outbox entries (decided by the router)
and with what it means for its incident's leader; then every listener hears of it.
Callers hold ``lock`` from reading an alert to committing its change.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from collector.alerts.flapping import notifiable, watch_flapping
from collector.alerts.incidents import Change, leader_of, tell_leader
from collector.alerts.model import ACTIVE_STATES, COLOURS, Alert, AlertEvent, State, worst_level
from collector.alerts.outbox import OutboxEntry
from collector.alerts.repositories import AlertRepository, SilenceRepository, Write

EventListener = Callable[[Alert, Sequence[AlertEvent]], None]
# Outbox entries for an alert's events, given the other active alerts of its incident.
IncidentRouter = Callable[[Alert, Sequence[AlertEvent], Sequence[Alert]], Sequence[OutboxEntry]]


class Ledger:
    def __init__(
        self,
        alerts: AlertRepository,
        silences: SilenceRepository,
        *,
        listeners: Sequence[EventListener],
        router: IncidentRouter | None,
        flap_window_s: float,
        flap_toggles: int,
    ) -> None:
        self.alerts = alerts
        self.silences = silences
        self.router = router  # outbox entries for each change, written in its transaction
        self.listeners = list(listeners)
        self.flap_window_ms = round(flap_window_s * 1000)
        self.flap_toggles = flap_toggles
        # Detections (collector loop) and people (HTTP API threads) change the same alerts:
        # each operation reads, decides and writes as one step.
        self.lock = threading.RLock()

    def _tell(self, alert: Alert, events: Sequence[AlertEvent]) -> None:
        for listener in self.listeners:
            listener(alert, events)

    def change(self, alert: Alert) -> Change:
        return Change(alert, [], self.alerts.last_seq(alert.id) + 1)

    def commit(self, change: Change) -> list[AlertEvent]:
        """Save the change, with its outbox and what it means for the incident's leader,
        in one transaction: a retry after a failed write finds all of it or none."""
        if not change.events:
            return []
        alert = change.alert
        incident = self.incident_of(alert)
        writes = [self._write(change, incident, self._silenced_at(change))]
        leader = leader_of(alert, incident)
        if leader is not None:
            lead = self.change(leader)
            if tell_leader(change, lead):
                others = [a for a in incident if a.id != leader.id] + [alert]
                writes.append(self._write(lead, others, self._silenced_at(lead)))
        self.alerts.save_all(writes)
        for saved, events, _ in writes:
            self._tell(saved, events)
        return [event for _, events, _ in writes for event in events]

    def _write(self, change: Change, incident: Sequence[Alert], silenced: bool) -> Write:
        """The alert's row, events and outbox entries, decided in memory (no store access:
        a new alert's are decided inside the store's transaction)."""
        watch_flapping(change, window_ms=self.flap_window_ms, toggles_to_flap=self.flap_toggles)
        alert = change.alert
        alert.incident_colour = COLOURS[worst_level([alert, *incident])]
        notifiable_events = notifiable(change, silenced)
        outbox = self.router(alert, notifiable_events, incident) if self.router else ()
        return alert, change.events, outbox

    def _silenced_at(self, change: Change) -> bool:
        return self.silenced(change.alert, max(e.at_ms for e in change.events))

    def _in_scope(self, alert: Alert) -> list[Alert]:
        """The active alerts an incident of ``alert`` may hold (``Alert.incident_scope``)."""
        if not alert.unit:
            return []
        return [
            a
            for a in self.alerts.matching(states=sorted(ACTIVE_STATES), unit=alert.unit)
            if a.incident_scope == alert.incident_scope
        ]

    def incident_of(self, alert: Alert) -> list[Alert]:
        """The other active alerts of the alert's incident."""
        return [
            a for a in self._in_scope(alert) if a.incident == alert.incident and a.id != alert.id
        ]

    def incident_leader(self, alert: Alert) -> Alert | None:
        """The leading alert of the open incident a new alert joins, if there is one.

        A resolved incident takes no new alerts: it only waits for verification and
        nobody works on it any more, so a new alarm there is a work order of its own."""
        leaders = [
            a for a in self._in_scope(alert) if a.leads_incident and a.state != State.RESOLVED
        ]
        return min(leaders, key=lambda a: a.id) if leaders else None

    def members(self, leader: Alert) -> list[Alert]:
        return [a for a in self._in_scope(leader) if a.incident == leader.id and a.id != leader.id]

    def silenced(self, alert: Alert, now_ms: int) -> bool:
        return any(s.covers(alert, now_ms) for s in self.silences.current(now_ms))

    def open(self, alert: Alert, opened: AlertEvent) -> list[AlertEvent]:
        """Store a new alert, and what its joining means for its unit's incident, in one
        transaction (the store numbers the alert inside it)."""
        leader = self.incident_leader(alert)
        incident: list[Alert] = []
        lead: Change | None = None
        lead_silenced = False
        if leader is not None:
            alert.incident_leader = leader.id
            incident = self.incident_of(alert)
            lead = self.change(leader)
            lead_silenced = self.silenced(leader, opened.at_ms)
        silenced = self.silenced(alert, opened.at_ms)
        also: list[Write] = []

        def decide(created: Alert, events: list[AlertEvent]) -> list[Write]:
            writes = [self._write(Change(created, events, 2), incident, silenced)]
            if lead is not None and tell_leader(Change(created, events, 2), lead):
                others = [a for a in incident if a.id != lead.alert.id] + [created]
                also.append(self._write(lead, others, lead_silenced))
            return writes + also

        created, events = self.alerts.create(alert, [opened], decide)  # assigns the id
        self._tell(created, events)
        for saved, told, _ in also:
            self._tell(saved, told)
        return events + [event for _, told, _ in also for event in told]
