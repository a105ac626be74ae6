"""The alert book: detections drive alerts through the five-step loop (see ``model``).

Inputs are detection events (a colour raised, changed or cleared for a fingerprint; a
device or gateway silent or resumed) and workflow actions from people and integrations
(acknowledge, resolve, comment). Actions are idempotent: acknowledging an acknowledged
alert changes nothing and records nothing. Time is always passed in (``now_ms``), never
read inside, so verification windows and deadlines can be compressed by configuration.

How a change is written and told is the ledger's (``ledger``); verification and
escalation run on the clock (``sweeps``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

from collector.alerts import sweeps
from collector.alerts.incidents import await_acknowledgement
from collector.alerts.ledger import EventListener, IncidentRouter, Ledger
from collector.alerts.model import (
    ACK_FROM,
    COLOURS,
    DISPATCH_FROM,
    RESOLVE_FROM,
    SYSTEM,
    Alert,
    AlertEvent,
    Detection,
    EventType,
    Fingerprint,
    Silence,
    State,
    opened_by,
)
from collector.alerts.repositories import AlertStorage
from collector.errors import (
    AlertActionError,
    AlertConflictError,
    TransitionError,
    UnknownAlertError,
)

F = TypeVar("F", bound=Callable[..., Any])

CLOCK_TASK = "alert-clock"  # the lease name of the sweeps on a shared store


# A shared store refuses a change decided on a copy another instance has changed since:
# the operation reads again and decides again, this many times at most.
CONFLICT_ATTEMPTS = 5


def _serialised(method: F) -> F:
    @functools.wraps(method)
    def wrapper(self: AlertBook, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            for _ in range(CONFLICT_ATTEMPTS - 1):
                try:
                    return method(self, *args, **kwargs)
                except AlertConflictError:
                    continue
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
        self._ledger = Ledger(
            storage.alerts,
            storage.silences,
            listeners=listeners,
            router=router,
            flap_window_s=flap_window_s,
            flap_toggles=flap_toggles,
        )
        self._lock = self._ledger.lock
        self.verify_window_ms = round(verify_window_s * 1000)

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
        for member in self._ledger.members(leader):
            if member.state in allowed:
                events += action(
                    member.id, actor=actor, now_ms=now_ms, note=f"with incident {leader.id}"
                )
        return events

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
            raise AlertActionError("a silence covers one unit or one device")
        if ends_ms <= starts_ms:
            raise AlertActionError("a silence must end after it starts")
        return self._silences.add(Silence(0, unit, device, starts_ms, ends_ms, actor, reason))

    def _require(self, alert_id: int) -> Alert:
        alert = self._alerts.get(alert_id)
        if alert is None:
            raise UnknownAlertError(alert_id)
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
            return self._ledger.open(alert, opened)
        change = self._ledger.change(alert)
        alert.value = value
        alert.note_peak(event.colour, value, event.threshold)
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
        return self._ledger.commit(change)

    def _clear(self, fingerprint: Fingerprint, at_ms: int, value: float | None) -> list[AlertEvent]:
        alert = self._alerts.find_active(fingerprint)
        if alert is None or not alert.condition_active:
            return []
        change = self._ledger.change(alert)
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
        return self._ledger.commit(change)

    # -- workflow --------------------------------------------------------------------------

    @_serialised
    def dispatched(
        self, alert_id: int, *, now_ms: int, actor: str = "dispatcher", note: str = ""
    ) -> list[AlertEvent]:
        alert = self._require(alert_id)
        if alert.state not in DISPATCH_FROM:
            return []
        change = self._ledger.change(alert)
        alert.state = State.DISPATCHED
        alert.dispatched = True
        change.record(EventType.DISPATCHED, now_ms, actor, note)
        return self._ledger.commit(change)

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
            change = self._ledger.change(alert)
            alert.state, alert.acknowledged = State.ACKNOWLEDGED, True
            alert.acknowledged_colour, alert.acknowledged_by = alert.colour, actor
            change.record(EventType.ACKNOWLEDGED, now_ms, actor, note)
            events = self._ledger.commit(change)
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
        change = self._ledger.change(alert)
        if not alert.acknowledged:  # resolving implies someone handled it
            alert.state, alert.acknowledged = State.ACKNOWLEDGED, True
            alert.acknowledged_colour, alert.acknowledged_by = alert.colour, actor
            change.record(EventType.ACKNOWLEDGED, now_ms, actor, "acknowledged by resolving")
        alert.state = State.RESOLVED
        alert.resolved_at_ms = now_ms
        change.record(EventType.RESOLVED, now_ms, actor, note)
        return self._ledger.commit(change) + self._for_incident(
            alert, self.resolve, RESOLVE_FROM, actor, now_ms
        )

    @_serialised
    def comment(self, alert_id: int, *, actor: str, note: str, now_ms: int) -> list[AlertEvent]:
        change = self._ledger.change(self._require(alert_id))
        change.record(EventType.COMMENTED, now_ms, actor, note)
        return self._ledger.commit(change)

    # -- the clock -------------------------------------------------------------------------

    @property
    def shared(self) -> bool:
        """Other instances change these alerts too (a shared store)."""
        return self._storage.shared

    def runs_clock(self) -> bool:
        """Whether this instance runs the alert clock (verify, escalate) now: always on a
        store of its own; on a shared one, one instance at a time holds the turn."""
        return self._storage.leads(CLOCK_TASK)

    def verify(self, now_ms: int, device_alive: Callable[[str], bool]) -> list[AlertEvent]:
        """Close resolved alerts whose readings stayed normal for the window, device alive."""
        return sweeps.verify(self._ledger, now_ms, device_alive, self.verify_window_ms)

    def escalate(self, now_ms: int, deadlines_s: Mapping[Any, float]) -> list[AlertEvent]:
        """Climb one level for every alert whose acknowledgement deadline has passed."""
        return sweeps.escalate(self._ledger, now_ms, deadlines_s)

    def silenced(self, alert: Alert, now_ms: int) -> bool:
        return self._ledger.silenced(alert, now_ms)

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
