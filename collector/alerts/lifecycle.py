"""The alert book: detections drive alerts through the five-step loop (see ``model``).

Inputs are detection events (a colour raised, changed or cleared for a fingerprint; a
device or gateway silent or resumed) and workflow actions from people and integrations
(acknowledge, resolve, comment). Actions are idempotent: acknowledging an acknowledged
alert changes nothing and records nothing. Time is always passed in (``now_ms``), never
read inside, so verification windows and deadlines can be compressed by configuration.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

from collector.alerts.flapping import notifiable, watch_flapping
from collector.alerts.incidents import (
    Change,
    await_acknowledgement,
    leader_of,
    tell_leader,
)
from collector.alerts.model import (
    ACK_FROM,
    ACTIVE_STATES,
    DISPATCH_FROM,
    ESCALATES_FROM,
    ESCALATION_LEVELS,
    RESOLVE_FROM,
    SYSTEM,
    Alert,
    AlertEvent,
    Detection,
    EventType,
    Fingerprint,
    Silence,
    State,
    TransitionError,
    opened_by,
    worst_level,
)
from collector.alerts.outbox import OutboxEntry
from collector.alerts.repositories import AlertStorage, Write
from detectors.levels import COLOURS

VERIFIER = "verifier"


EventListener = Callable[[Alert, Sequence[AlertEvent]], None]
# Outbox entries for an alert's events, given the other active alerts of its incident.
IncidentRouter = Callable[[Alert, Sequence[AlertEvent], Sequence[Alert]], Sequence[OutboxEntry]]


F = TypeVar("F", bound=Callable[..., Any])


def _serialised(method: F) -> F:
    @functools.wraps(method)
    def wrapper(self: AlertBook, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return cast(F, wrapper)


class AlertBook:
    """What the rest of the service changes and reads alerts through (never the store).

    ``listeners`` hear of every committed change, whoever caused it (detector, API,
    verifier): annotations, notifications and the field downlink hang on them."""

    def __init__(
        self,
        storage: AlertStorage,
        *,
        verify_window_s: float = 300.0,
        listeners: Sequence[EventListener] = (),
        router: IncidentRouter | None = None,
        flap_window_s: float = 3600.0,
        flap_toggles: int = 6,
    ) -> None:
        self._storage = storage
        self._alerts = storage.alerts
        self._silences = storage.silences
        self.router = router  # outbox entries for each change, written in its transaction
        self.flap_window_ms = round(flap_window_s * 1000)
        self.flap_toggles = flap_toggles
        self.verify_window_ms = round(verify_window_s * 1000)
        self.listeners = list(listeners)
        # Detections (collector loop) and people (HTTP API threads) change the same alerts:
        # each operation reads, decides and writes as one step.
        self._lock = threading.RLock()

    def _tell(self, alert: Alert, events: Sequence[AlertEvent]) -> None:
        for listener in self.listeners:
            listener(alert, events)

    # -- helpers ---------------------------------------------------------------------------

    def _change(self, alert: Alert) -> Change:
        return Change(alert, [], self._alerts.last_seq(alert.id) + 1)

    def _commit(self, change: Change) -> list[AlertEvent]:
        """Save the change, with its outbox and what it means for the incident's leader,
        in one transaction: a retry after a failed write finds all of it or none."""
        if not change.events:
            return []
        alert = change.alert
        incident = self._incident(alert)
        writes = [self._write(change, incident, self._silenced_at(change))]
        leader = leader_of(alert, incident)
        if leader is not None:
            lead = self._change(leader)
            if tell_leader(change, lead):
                others = [a for a in incident if a.id != leader.id] + [alert]
                writes.append(self._write(lead, others, self._silenced_at(lead)))
        self._alerts.save_all(writes)
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

    def _incident(self, alert: Alert) -> list[Alert]:
        """The other active alerts of the alert's incident."""
        if not alert.unit:
            return []
        return [
            a
            for a in self._alerts.matching(states=sorted(ACTIVE_STATES), unit=alert.unit)
            if a.incident == alert.incident and a.id != alert.id
        ]

    def _incident_leader(self, unit: str) -> Alert | None:
        """The leading alert of the unit's open incident, if there is one.

        A resolved incident takes no new alerts: it only waits for verification and
        nobody works on it any more, so a new alarm there is a work order of its own."""
        if not unit:
            return None
        leaders = [
            a
            for a in self._alerts.matching(states=sorted(ACTIVE_STATES), unit=unit)
            if a.leads_incident and a.state != State.RESOLVED
        ]
        return min(leaders, key=lambda a: a.id) if leaders else None

    def _for_incident(
        self,
        leader: Alert,
        action: Callable[..., list[AlertEvent]],
        allowed: frozenset[State],
        actor: str,
        now_ms: int,
    ) -> list[AlertEvent]:
        """What was done to an incident's leader is done to its members: handled as one."""
        if not leader.leads_incident:
            return []
        events: list[AlertEvent] = []
        for member in self._members(leader):
            if member.state in allowed:
                events += action(
                    member.id, actor=actor, now_ms=now_ms, note=f"with incident {leader.id}"
                )
        return events

    def _members(self, leader: Alert) -> list[Alert]:
        return [
            a
            for a in self._alerts.matching(states=sorted(ACTIVE_STATES), unit=leader.unit)
            if a.incident == leader.id and a.id != leader.id
        ]

    def silenced(self, alert: Alert, now_ms: int) -> bool:
        return any(s.covers(alert, now_ms) for s in self._silences.current(now_ms))

    @_serialised
    def silence(
        self,
        *,
        unit: str | None = None,
        device: str | None = None,
        starts_ms: int,
        ends_ms: int,
        actor: str,
        reason: str,
    ) -> Silence:
        if (unit is None) == (device is None):
            raise ValueError("a silence covers one unit or one device")
        if ends_ms <= starts_ms:
            raise ValueError("a silence must end after it starts")
        return self._silences.add(Silence(0, unit, device, starts_ms, ends_ms, actor, reason))

    def _require(self, alert_id: int) -> Alert:
        alert = self._alerts.get(alert_id)
        if alert is None:
            raise KeyError(alert_id)
        return alert

    # -- detections ------------------------------------------------------------------------

    @_serialised
    def on_detection(
        self, event: Detection, hierarchy: dict[str, str] | None = None
    ) -> list[AlertEvent]:
        fingerprint = Fingerprint(event.device, event.quantity, event.detector)
        value = event.value if event.value == event.value else None  # NaN: no value
        if event.kind in ("raised", "changed", "silent"):
            return self._raise(fingerprint, event, value, hierarchy or {})
        return self._clear(fingerprint, event.ts_ms, value)

    def _raise(
        self,
        fingerprint: Fingerprint,
        event: Detection,
        value: float | None,
        hierarchy: dict[str, str],
    ) -> list[AlertEvent]:
        alert = self._alerts.find_active(fingerprint)
        if alert is None:
            alert, opened = opened_by(event, fingerprint, value, hierarchy)
            return self._open(alert, opened)
        change = self._change(alert)
        alert.value = value
        if not alert.condition_active:
            alert.condition_active = True
            alert.condition_changed_at_ms = event.ts_ms
            if alert.state == State.RESOLVED:
                # The fix did not hold: someone must take it on again, and the
                # acknowledgement deadline runs afresh at the level reached.
                alert.state, alert.acknowledged = State.REOPENED, False
                alert.level_since_ms = event.ts_ms
                change.record(
                    EventType.REOPENED,
                    event.ts_ms,
                    SYSTEM,
                    "readings abnormal again during verification",
                )
            else:
                if alert.state == State.RECOVERED:
                    alert.state = (
                        State.ACKNOWLEDGED
                        if alert.acknowledged
                        else (State.DISPATCHED if alert.dispatched else State.OPEN)
                    )
                change.record(EventType.CONDITION_RETURNED, event.ts_ms, SYSTEM)
        if event.colour != alert.colour:
            previous, alert.colour = alert.colour, event.colour
            alert.threshold = event.threshold
            note = f"{previous} -> {event.colour}"
            seen = alert.acknowledged_colour or previous
            if alert.state == State.ACKNOWLEDGED and COLOURS.index(event.colour) > COLOURS.index(
                seen
            ):
                # Someone took on a lesser alarm than this one: it needs them again.
                await_acknowledgement(alert, event.ts_ms)
                change.ack_voided = True
                note += f", above the {seen} acknowledged"
            change.record(EventType.COLOUR_CHANGED, event.ts_ms, SYSTEM, note)
        return self._commit(change)

    def _open(self, alert: Alert, opened: AlertEvent) -> list[AlertEvent]:
        """Store a new alert, and what its joining means for its unit's incident, in one
        transaction (the store numbers the alert inside it)."""
        leader = self._incident_leader(alert.unit)
        incident: list[Alert] = []
        lead: Change | None = None
        lead_silenced = False
        if leader is not None:
            alert.incident_leader = leader.id
            incident = self._incident(alert)
            lead = self._change(leader)
            lead_silenced = self.silenced(leader, opened.at_ms)
        silenced = self.silenced(alert, opened.at_ms)
        also: list[Write] = []

        def decide(created: Alert, events: list[AlertEvent]) -> list[Write]:
            writes = [self._write(Change(created, events, 2), incident, silenced)]
            if lead is not None and tell_leader(Change(created, events, 2), lead):
                others = [a for a in incident if a.id != lead.alert.id] + [created]
                also.append(self._write(lead, others, lead_silenced))
            return writes + also

        created, events = self._alerts.create(alert, [opened], decide)  # assigns the id
        self._tell(created, events)
        for saved, told, _ in also:
            self._tell(saved, told)
        return events + [event for _, told, _ in also for event in told]

    def _clear(self, fingerprint: Fingerprint, at_ms: int, value: float | None) -> list[AlertEvent]:
        alert = self._alerts.find_active(fingerprint)
        if alert is None or not alert.condition_active:
            return []
        change = self._change(alert)
        alert.condition_active = False
        alert.condition_changed_at_ms = at_ms
        alert.value = value
        if alert.state in (State.OPEN, State.DISPATCHED):
            alert.state = State.RECOVERED
            change.record(
                EventType.RECOVERED,
                at_ms,
                SYSTEM,
                "condition cleared by itself; still needs acknowledgement",
            )
        else:
            change.record(EventType.CONDITION_CLEARED, at_ms, SYSTEM)
        return self._commit(change)

    # -- workflow --------------------------------------------------------------------------

    @_serialised
    def dispatched(
        self, alert_id: int, *, now_ms: int, actor: str = "dispatcher", note: str = ""
    ) -> list[AlertEvent]:
        alert = self._require(alert_id)
        if alert.state not in DISPATCH_FROM:
            return []
        change = self._change(alert)
        alert.state = State.DISPATCHED
        alert.dispatched = True
        change.record(EventType.DISPATCHED, now_ms, actor, note)
        return self._commit(change)

    @_serialised
    def acknowledge(
        self, alert_id: int, *, actor: str, note: str = "", now_ms: int
    ) -> list[AlertEvent]:
        alert = self._require(alert_id)
        if alert.acknowledged and alert.state in (State.RESOLVED, State.CLOSED):
            return []  # idempotent
        events: list[AlertEvent] = []
        if alert.state != State.ACKNOWLEDGED:
            if alert.state not in ACK_FROM:
                raise TransitionError(f"alert {alert_id} is {alert.state}: cannot acknowledge")
            change = self._change(alert)
            alert.state, alert.acknowledged = State.ACKNOWLEDGED, True
            alert.acknowledged_colour = alert.colour
            change.record(EventType.ACKNOWLEDGED, now_ms, actor, note)
            events = self._commit(change)
        # An incident's acknowledgement covers its alerts as they are now; one that joins
        # or rises later needs a fresh acknowledgement of the leader (idempotent for the
        # rest: an acknowledged alert records nothing).
        return events + self._for_incident(alert, self.acknowledge, ACK_FROM, actor, now_ms)

    @_serialised
    def resolve(
        self, alert_id: int, *, actor: str, note: str = "", now_ms: int
    ) -> list[AlertEvent]:
        alert = self._require(alert_id)
        if alert.state == State.RESOLVED:
            return []  # idempotent
        if alert.state not in RESOLVE_FROM:
            raise TransitionError(f"alert {alert_id} is {alert.state}: cannot resolve")
        change = self._change(alert)
        if not alert.acknowledged:  # resolving implies someone handled it
            alert.state, alert.acknowledged = State.ACKNOWLEDGED, True
            alert.acknowledged_colour = alert.colour
            change.record(EventType.ACKNOWLEDGED, now_ms, actor, "acknowledged by resolving")
        alert.state = State.RESOLVED
        alert.resolved_at_ms = now_ms
        change.record(EventType.RESOLVED, now_ms, actor, note)
        return self._commit(change) + self._for_incident(
            alert, self.resolve, RESOLVE_FROM, actor, now_ms
        )

    @_serialised
    def comment(self, alert_id: int, *, actor: str, note: str, now_ms: int) -> list[AlertEvent]:
        change = self._change(self._require(alert_id))
        change.record(EventType.COMMENTED, now_ms, actor, note)
        return self._commit(change)

    # -- verification ----------------------------------------------------------------------

    # verify and escalate scan every open alert from a worker thread. The scan takes no
    # lock: holding the book's lock through it (~50-80 ms for 200 open alerts) stalled the
    # event loop's next detection, hence a new alert's webhook. Only an alert found due is
    # locked, read again and checked again, since a person may have acted on it meanwhile.

    def verify(self, now_ms: int, device_alive: Callable[[str], bool]) -> list[AlertEvent]:
        """Close resolved alerts whose readings stayed normal for the window, device alive."""

        def due(alert: Alert) -> bool:
            if alert.state != State.RESOLVED or alert.condition_active:
                return False  # the handler says fixed, the readings do not agree yet
            normal_since = max(alert.condition_changed_at_ms, alert.resolved_at_ms or 0)
            if now_ms - normal_since < self.verify_window_ms:
                return False
            return device_alive(alert.fingerprint.device)  # silence is not normality

        def close(alert: Alert, change: Change) -> None:
            alert.state = State.CLOSED
            change.record(
                EventType.CLOSED,
                now_ms,
                VERIFIER,
                f"readings normal for {self.verify_window_ms / 1000:.0f} s",
            )

        return self._sweep([State.RESOLVED], due, close)

    def escalate(self, now_ms: int, deadlines_s: Mapping[Any, float]) -> list[AlertEvent]:
        """Climb one level for every alert whose acknowledgement deadline has passed.

        ``deadlines_s`` maps a colour to its deadline; colours without one never escalate.
        The clock restarts at each level, and it survives restarts: it is stored.
        """

        def due(alert: Alert) -> bool:
            deadline = deadlines_s.get(alert.colour)
            level = alert.level
            if alert.state not in ESCALATES_FROM:
                return False
            if deadline is None or level == ESCALATION_LEVELS[-1]:
                return False
            since = alert.started_at_ms if alert.level_since_ms is None else alert.level_since_ms
            if now_ms - since < deadline * 1000:
                return False
            return not self.silenced(alert, now_ms)  # in maintenance: nobody must answer

        def climb(alert: Alert, change: Change) -> None:
            level = alert.level
            upper = ESCALATION_LEVELS[ESCALATION_LEVELS.index(level) + 1]
            alert.level, alert.level_since_ms = upper, now_ms
            deadline = deadlines_s[alert.colour]
            change.record(
                EventType.ESCALATED,
                now_ms,
                SYSTEM,
                f"not acknowledged within {deadline:.0f} s: {level} -> {upper}",
            )

        return self._sweep(sorted(ESCALATES_FROM), due, climb)

    def _sweep(
        self,
        states: Sequence[State],
        due: Callable[[Alert], bool],
        act: Callable[[Alert, Change], None],
    ) -> list[AlertEvent]:
        """``act`` on every alert in ``states`` that is ``due``, each under the lock."""
        events: list[AlertEvent] = []
        for candidate in self._alerts.matching(states=states):
            if not due(candidate):
                continue
            with self._lock:
                alert = self._alerts.get(candidate.id)
                if alert is None or not due(alert):
                    continue
                change = self._change(alert)
                act(alert, change)
                events += self._commit(change)
        return events

    # -- reading -------------------------------------------------------------------------

    def history(self, alert_id: int) -> Sequence[AlertEvent]:
        return self._alerts.events(alert_id)

    def get(self, alert_id: int) -> Alert | None:
        return self._alerts.get(alert_id)

    def find(self, *, states: Sequence[State] = (), unit: str | None = None) -> list[Alert]:
        """Alerts in any of ``states`` (all when empty), of one ``unit`` if given, by id."""
        return self._alerts.matching(states=states, unit=unit)

    def silences(self, now_ms: int) -> list[Silence]:
        """Silences not yet over (current and future)."""
        return self._silences.current(now_ms)

    def outbox_counts(self) -> dict[str, int]:
        """Outbox entries by status (pending, delivered, dead)."""
        return self._storage.outbox.counts()

    def close(self) -> None:
        self._storage.close()
