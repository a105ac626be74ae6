"""Where alerts are kept: three repositories behind small interfaces, opened from a URL.

- ``AlertRepository``: alerts and their events; a change's outbox entries are written in
  the same transaction (the transactional outbox);
- ``OutboxRepository`` (collector/alerts/outbox.py): the deliveries still to make;
- ``SilenceRepository``: maintenance windows.

A backend implements them (collector/alerts/store.py: SQLite, collector/alerts/pgstore.py:
PostgreSQL shared by several instances) and is registered under
its URL scheme in collector/alerts/backends.py; the rest of the service sees only these
interfaces.

``Decide`` runs inside ``create``'s transaction because the outbox rows carry the id the
store assigns there; it is pure computation on data (routing, flapping, the incident's
leader, receiver formats encoding bodies): no I/O, no delivery, nothing that waits, which
tests/test_structure.py holds by checking those modules reach no I/O module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from collector.alerts.model import Alert, AlertEvent, Fingerprint, Silence, State
from collector.alerts.outbox import OutboxEntry, OutboxRepository

# One alert's new row, new events and their outbox entries.
Write = tuple[Alert, Sequence[AlertEvent], Sequence[OutboxEntry]]
# Called inside create's transaction once the alert has its id: what to write for it, and
# for any other alert its creation changes (the leader of the incident it joins).
Decide = Callable[[Alert, list[AlertEvent]], Sequence[Write]]


class AlertRepository(Protocol):
    def create(
        self, alert: Alert, events: Sequence[AlertEvent], decide: Decide | None = None
    ) -> tuple[Alert, list[AlertEvent]]: ...
    def save(
        self, alert: Alert, events: Sequence[AlertEvent], outbox: Sequence[OutboxEntry] = ()
    ) -> None: ...
    def save_all(self, writes: Sequence[Write]) -> None: ...
    def get(self, alert_id: int) -> Alert | None: ...
    def find_active(self, fingerprint: Fingerprint) -> Alert | None: ...
    def matching(self, *, states: Sequence[State] = (), unit: str | None = None) -> list[Alert]: ...
    def events(self, alert_id: int) -> list[AlertEvent]: ...
    def last_seq(self, alert_id: int) -> int: ...


class SilenceRepository(Protocol):
    def add(self, silence: Silence) -> Silence: ...
    def current(self, now_ms: int) -> list[Silence]: ...


class AlertStorage(Protocol):
    """The three repositories of one backend, and its end.

    ``shared``: other collector instances may change what it holds at any time (a
    change decided on a stale copy raises ``AlertConflictError``). ``leads(task)``:
    whether this instance runs ``task`` (a sweep of the alert clock) now; with one
    instance on the store, always."""

    @property
    def shared(self) -> bool: ...
    def leads(self, task: str) -> bool: ...
    @property
    def alerts(self) -> AlertRepository: ...
    @property
    def outbox(self) -> OutboxRepository: ...
    @property
    def silences(self) -> SilenceRepository: ...
    def close(self) -> None: ...
