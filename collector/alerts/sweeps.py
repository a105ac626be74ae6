"""The alert clock: resolved alerts verified and closed, unacknowledged ones escalated.

Time is passed in (``now_ms``), so windows and deadlines can be compressed by configuration.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from collector.alerts.incidents import Change
from collector.alerts.ledger import Ledger
from collector.alerts.model import (
    ESCALATES_FROM,
    ESCALATION_LEVELS,
    SYSTEM,
    Alert,
    AlertEvent,
    EventType,
    State,
)
from collector.errors import AlertConflictError

VERIFIER = "verifier"

# verify and escalate scan every open alert from a worker thread. The scan takes no
# lock: holding the book's lock through it (~50-80 ms for 200 open alerts) stalled the
# event loop's next detection, hence a new alert's webhook. Only an alert found due is
# locked, read again and checked again, since a person may have acted on it meanwhile.


def verify(
    ledger: Ledger, now_ms: int, device_alive: Callable[[str], bool], window_ms: int
) -> list[AlertEvent]:
    """Close resolved alerts whose readings stayed normal for the window, device alive."""

    def due(alert: Alert) -> bool:
        if alert.state != State.RESOLVED or alert.condition_active:
            return False  # the handler says fixed, the readings do not agree yet
        normal_since = max(alert.condition_changed_at_ms, alert.resolved_at_ms or 0)
        if now_ms - normal_since < window_ms:
            return False
        return device_alive(alert.fingerprint.device)  # silence is not normality

    def close(alert: Alert, change: Change) -> None:
        alert.state = State.CLOSED
        change.record(
            EventType.CLOSED,
            now_ms,
            VERIFIER,
            f"readings normal for {window_ms / 1000:.0f} s",
        )

    return _sweep(ledger, [State.RESOLVED], due, close)


def escalate(ledger: Ledger, now_ms: int, deadlines_s: Mapping[Any, float]) -> list[AlertEvent]:
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
        return not ledger.silenced(alert, now_ms)  # in maintenance: nobody must answer

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

    return _sweep(ledger, sorted(ESCALATES_FROM), due, climb)


def _sweep(
    ledger: Ledger,
    states: Sequence[State],
    due: Callable[[Alert], bool],
    act: Callable[[Alert, Change], None],
) -> list[AlertEvent]:
    """``act`` on every alert in ``states`` that is ``due``, each under the lock."""
    events: list[AlertEvent] = []
    for candidate in ledger.alerts.matching(states=states):
        if not due(candidate):
            continue
        with ledger.lock:
            alert = ledger.alerts.get(candidate.id)
            if alert is None or not due(alert):
                continue
            change = ledger.change(alert)
            act(alert, change)
            try:
                events += ledger.commit(change)
            except AlertConflictError:
                continue  # another instance changed it first: the next sweep judges it anew
    return events
