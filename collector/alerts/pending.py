"""Detections waiting for the alert store: an alarm is raised once it is stored, not before.

When the alert book cannot write (a full or failing disk, a read-only file system, a
database another process holds locked), a detection is kept here and applied again with
doubling delays until the store takes it. While anything waits, new detections queue
behind it, so each fingerprint's alert sees its detections in the order they happened.

Bounded by fingerprints (device, quantity, detector), a set the detectors already bound:
per fingerprint at most three detections are kept, the first, the worst colour since and
the latest, so the alert, once stored, opens when it did, shows its peak and stands where
the readings are now; the toggles between are summarised away. Overflow policy: beyond
``max_fingerprints`` the fingerprint whose worst waiting colour is lowest (the oldest
among equals) is dropped, counted and logged at error: an unstored blue notice goes
before an unstored red alarm.

A failure that is not the store's (a bug raising something else) is not retried: it would
hold every later alarm behind it. It goes back to the caller, as before.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from collector.alerts.backends import STORE_ERRORS
from collector.alerts.model import COLOURS, Detection
from collector.backoff import Backoff

log = logging.getLogger(__name__)

MAX_FINGERPRINTS = 10_000
RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 10.0

Apply = Callable[[Detection, dict[str, str]], object]


@dataclass(frozen=True)
class _Waiting:
    event: Detection
    hierarchy: dict[str, str]

    @property
    def level(self) -> int:
        return COLOURS.index(self.event.colour) if self.event.colour in COLOURS else 0


def _key(event: Detection) -> tuple[str, str, str]:
    return (event.device, event.quantity, event.detector)


class PendingDetections:
    def __init__(
        self,
        apply: Apply,
        *,
        max_fingerprints: int = MAX_FINGERPRINTS,
        retry_initial_s: float = RETRY_INITIAL_S,
        retry_max_s: float = RETRY_MAX_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._apply = apply
        self.max_fingerprints = max_fingerprints
        self.retry_initial_s, self.retry_max_s = retry_initial_s, retry_max_s
        # no jitter: one store, one retrier; nothing to spread
        self._backoff = Backoff(initial_s=retry_initial_s, max_s=retry_max_s, jitter=0.0)
        self._clock = clock
        self._queue: collections.OrderedDict[tuple[str, str, str], list[_Waiting]] = (
            collections.OrderedDict()
        )
        self._attempts = 0
        self._next_attempt = 0.0
        self.failures = 0  # store writes that failed
        self.dropped = 0  # detections given up by the overflow policy
        self.last_error = ""
        self._peak = 0  # most detections waiting since the last look (see take_peak)

    def __len__(self) -> int:
        """Detections waiting."""
        return sum(len(waiting) for waiting in self._queue.values())

    @property
    def degraded(self) -> bool:
        return bool(self._queue)

    def take_peak(self) -> int:
        """The most detections that waited at once since the last call: a failure that
        heals between two looks still counts."""
        peak, self._peak = max(self._peak, len(self)), len(self)
        return peak

    def submit(self, event: Detection, hierarchy: dict[str, str]) -> bool:
        """Apply a detection now, or keep it to retry; True when it is stored."""
        if self._queue:  # behind what waits: in order, and no write while it cannot
            self._add(_Waiting(event, hierarchy))
            return False
        try:
            self._apply(event, hierarchy)
        except STORE_ERRORS as exc:
            self._add(_Waiting(event, hierarchy))
            self._failed(exc)
            return False
        return True

    def due(self) -> bool:
        return bool(self._queue) and self._clock() >= self._next_attempt

    def retry(self, limit: int) -> int:
        """Apply up to ``limit`` waiting detections in order; how many were stored."""
        stored = 0
        while self._queue and stored < limit:
            key, waiting = next(iter(self._queue.items()))
            try:
                self._apply(waiting[0].event, waiting[0].hierarchy)
            except STORE_ERRORS as exc:
                self._failed(exc)
                return stored
            waiting.pop(0)
            if not waiting:
                del self._queue[key]
            stored += 1
        if not self._queue and self._attempts:
            log.warning(
                "alert store writable again: every waiting detection is stored",
                extra={"failures": self.failures, "dropped": self.dropped},
            )
            self._attempts = 0
        return stored

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"[:300]
        delay = self._backoff.delay(self._attempts + 1)
        self._attempts += 1
        self._next_attempt = self._clock() + delay
        log.error(
            "alert store cannot be written: detections wait and are retried",
            extra={
                "error": self.last_error,
                "waiting": len(self),
                "retry_in_s": delay,
                "attempts": self._attempts,
            },
        )

    def _add(self, item: _Waiting) -> None:
        key = _key(item.event)
        waiting = self._queue.get(key)
        if waiting is None:
            if len(self._queue) >= self.max_fingerprints:
                self._drop_one()
            self._queue[key] = [item]
        else:
            waiting.append(item)
            if len(waiting) > 3:  # the first, the worst since, the latest
                between = waiting[1:-1]
                worst = max(between, key=lambda w: w.level)  # the earliest among equals
                waiting[:] = [waiting[0], worst, waiting[-1]]
        self._peak = max(self._peak, len(self))

    def _drop_one(self) -> None:
        key = min(self._queue, key=lambda k: max(w.level for w in self._queue[k]))
        lost = self._queue.pop(key)
        self.dropped += len(lost)
        log.error(
            "alert store unwritable and the waiting list full: detections dropped",
            extra={
                "device": key[0],
                "quantity": key[1],
                "detector": key[2],
                "colour": COLOURS[max(w.level for w in lost)],
                "dropped": self.dropped,
            },
        )
