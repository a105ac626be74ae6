"""Per-device rate limit: one flooding device must not starve the others.

A token bucket per device id (from the topic, never the payload), refilled at
``rate_per_s`` messages per second of arrival time up to ``burst``. A message that finds
the bucket empty is rejected as ``rate_limited``: counted and logged like any rejection,
but not republished to the quarantine topic, which would double the flood. A backlog
array counts as one message, so a device that comes back after an outage sends its
buffer as arrays (docs/device-protocol.md) and is not limited.

Memory is bounded: past ``max_devices`` buckets (a flood of made-up ids) all are
forgotten at once, which only ever lets more through, never less.
"""

from __future__ import annotations


class DeviceRateLimit:
    def __init__(self, *, rate_per_s: float, burst: float, max_devices: int = 100_000) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s > 0 and burst >= 1 required")
        self.rate_per_s, self.burst, self.max_devices = rate_per_s, burst, max_devices
        self._buckets: dict[str, tuple[float, float]] = {}  # device -> (tokens, at)

    def allow(self, device: str, now_s: float) -> bool:
        tokens, at = self._buckets.get(device, (self.burst, now_s))
        tokens = min(self.burst, tokens + max(now_s - at, 0.0) * self.rate_per_s)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        if len(self._buckets) >= self.max_devices and device not in self._buckets:
            self._buckets.clear()
        self._buckets[device] = (tokens, now_s)
        return allowed
