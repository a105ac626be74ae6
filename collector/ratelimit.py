"""Per-device rate limit: one flooding device must not starve the others.

A token bucket per device id (from the topic, never the payload), refilled at
``rate_per_s`` messages per second of arrival time up to ``burst``. A message that finds
the bucket empty is rejected as ``rate_limited``: counted and logged like any rejection,
but not republished to the quarantine topic, which would double the flood. A backlog
array counts as one message, so a device that comes back after an outage sends its
buffer as arrays (docs/device-protocol.md) and is not limited.

The bucket is kept in its equivalent one-number form (the generic cell rate algorithm):
the time at which the bucket would be full again. Every message passes through here, and
one float per device costs a third of a (tokens, time) pair refilled on each message.

Memory is bounded: past ``max_devices`` buckets (a flood of made-up ids) all are
forgotten at once, which only ever lets more through, never less.
"""

from __future__ import annotations


class DeviceRateLimit:
    def __init__(self, *, rate_per_s: float, burst: float, max_devices: int = 100_000) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s > 0 and burst >= 1 required")
        self.rate_per_s, self.burst, self.max_devices = rate_per_s, burst, max_devices
        self._interval_s = 1.0 / rate_per_s  # what one message takes out of the bucket
        # How far ahead of now the full-again time may be and a message still fit: an
        # empty bucket plus the burst, less one message. The millionth of an interval
        # absorbs float rounding at the exact boundary, where a token would be 1.0.
        self._tolerance_s = (burst - 1 + 1e-6) * self._interval_s
        self._full_at: dict[str, float] = {}  # device -> when its bucket is full again

    def allow(self, device: str, now_s: float) -> bool:
        full_at_by_device = self._full_at
        full_at = full_at_by_device.get(device)
        if full_at is None:  # a device not seen (or forgotten)
            if len(full_at_by_device) >= self.max_devices:
                full_at_by_device.clear()
            full_at = now_s
        elif full_at < now_s:
            full_at = now_s
        elif full_at - now_s > self._tolerance_s:
            return False
        full_at_by_device[device] = full_at + self._interval_s
        return True
