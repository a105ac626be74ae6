"""Capped exponential backoff with jitter, honouring a server's Retry-After.

One policy for every retry the service makes: InfluxDB writes and spool replay, webhook
deliveries, MQTT reconnects. Jitter spreads the retries of many collectors (or many
receivers' lanes) so that a recovering server is not hit by all of them at once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

_MAX_DOUBLINGS = 64  # past this the cap has long been reached; keeps 2**n a small int


@dataclass(frozen=True, kw_only=True)
class Backoff:
    initial_s: float
    max_s: float
    jitter: float = 0.2  # each delay is scaled by a random factor in [1 - jitter, 1 + jitter]
    # A Retry-After longer than the backoff is waited out, up to this (default: max_s): a
    # server's hint must not park a retry for a day.
    retry_after_max_s: float | None = None

    def delay(self, attempt: int, *, retry_after_s: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (1 for the first retry)."""
        doublings = min(max(attempt - 1, 0), _MAX_DOUBLINGS)
        delay = min(self.initial_s * 2.0**doublings, self.max_s)
        delay *= random.uniform(1 - self.jitter, 1 + self.jitter)
        if retry_after_s is not None:
            cap = self.max_s if self.retry_after_max_s is None else self.retry_after_max_s
            delay = max(delay, min(retry_after_s, cap))
        return delay
