"""The outbox: what each receiver is still to be sent, written with the alert change that
caused it and read by the receivers' lanes (collector/alerts/dispatch.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class OutboxEntry:
    """One event for one receiver, as the alert change that caused it writes it."""

    receiver: str
    event_key: str
    alert_id: int
    seq: int
    payload: bytes


@dataclass(frozen=True)
class OutboxRow:
    id: int
    receiver: str
    event_key: str
    alert_id: int
    seq: int
    payload: bytes
    attempts: int
    created_ms: int  # when the event was written to the outbox (the collector's clock)


@dataclass(frozen=True)
class Backlog:
    """A receiver's part of the outbox."""

    pending: int = 0
    oldest_pending_ms: int | None = None  # created_ms of its oldest pending event
    dead: int = 0  # events in its dead-letter list


class OutboxRepository(Protocol):
    """Delivery bookkeeping. Entries are added by the alert repository, in the transaction
    of the change they tell of; this side only reads and settles them."""

    def due(self, now_ms: int, receiver: str, limit: int = 100) -> list[OutboxRow]: ...
    def delivered(self, row_id: int, now_ms: int) -> None: ...
    def retry_later(self, row_id: int, next_attempt_ms: int, error: str) -> None: ...
    def dead(self, row_id: int, error: str) -> None: ...
    def dead_unless_receiver(self, receivers: Sequence[str], error: str) -> int: ...
    def retry_now(self, receiver: str) -> int: ...
    def backlogs(self) -> dict[str, Backlog]: ...
    def counts(self) -> dict[str, int]: ...
