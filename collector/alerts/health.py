"""How each webhook receiver is doing: what its lane saw, kept where everyone can read it.

A receiver's lane records every attempt's outcome here; the operator watch
(collector/operator.py ``ReceiverWatch``) turns a failing receiver into an alert, and the
API, ``/metrics`` and the console show it. The backlog (pending events, the oldest one's
age, the dead-letter list) is the outbox's, read from the store when asked.
"""

from __future__ import annotations

from dataclasses import dataclass

from collector.alerts.model import Alert

# The operator alert naming a receiver that refuses or cannot be reached. Its "device"
# is the receiver's name; routing never sends it to that receiver (it would wait on the
# very failure it reports, and be given up on with the events it is about).
RECEIVER_FAILING_DETECTOR = "webhook-failing"


def receiver_reported_on(alert: Alert) -> str | None:
    """The receiver an operator alert is about, if it is a failing receiver's alert."""
    if alert.fingerprint.detector == RECEIVER_FAILING_DETECTOR:
        return alert.fingerprint.device
    return None


@dataclass
class ReceiverHealth:
    """One receiver's recent outcomes (times in epoch ms, from the collector's clock)."""

    consecutive_failures: int = 0
    # The first failed attempt since the last delivery; None while delivering.
    failing_since_ms: int | None = None
    last_error: str = ""  # "HTTP 500: <start of the body>", or the timeout or network error
    last_status: int | None = None  # of the last failed attempt; None when nothing answered
    last_error_ms: int | None = None
    last_delivered_ms: int | None = None
    delivered: int = 0
    failed_attempts: int = 0
    dead_letters: int = 0  # events this run moved to the dead-letter list
    given_up: int = 0  # of those: retried until the receiver's give_up_after_s
    _unreported_dead: int = 0  # dead-lettered since the operator watch last looked

    def record_delivery(self, now_ms: int) -> None:
        self.consecutive_failures = 0
        self.failing_since_ms = None
        self.last_delivered_ms = now_ms
        self.delivered += 1

    def record_failure(self, now_ms: int, error: str, status: int | None) -> None:
        self.consecutive_failures += 1
        self.failed_attempts += 1
        if self.failing_since_ms is None:
            self.failing_since_ms = now_ms
        self.last_error, self.last_status, self.last_error_ms = error, status, now_ms

    def record_dead_letter(self, *, given_up: bool) -> None:
        self.dead_letters += 1
        self.given_up += given_up
        self._unreported_dead += 1

    def take_dead_letters(self) -> int:
        """Events dead-lettered since the last call: each must reach an operator."""
        found, self._unreported_dead = self._unreported_dead, 0
        return found

    def failing_for_s(self, now_ms: int) -> float:
        if self.failing_since_ms is None:
            return 0.0
        return max(now_ms - self.failing_since_ms, 0) / 1000
