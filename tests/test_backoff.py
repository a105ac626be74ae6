"""One retry policy for writes, replay, webhooks, reconnects and the alert store's waiting
list: capped, jittered, honouring Retry-After, and still working after a long outage."""

from __future__ import annotations

from pathlib import Path

from collector.alerts.pending import PendingDetections
from collector.backoff import Backoff
from tests.test_pending_detections import Store, gas


def test_delays_double_up_to_the_cap_within_the_jitter() -> None:
    backoff = Backoff(initial_s=1.0, max_s=30.0)
    for attempt, base in ((1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0), (6, 30.0), (40, 30.0)):
        for _ in range(20):
            assert base * 0.8 <= backoff.delay(attempt) <= base * 1.2


def test_retry_after_is_waited_out_up_to_its_own_cap() -> None:
    backoff = Backoff(initial_s=1.0, max_s=30.0, jitter=0.0, retry_after_max_s=120.0)
    assert backoff.delay(1, retry_after_s=90.0) == 90.0
    assert backoff.delay(1, retry_after_s=3600.0) == 120.0
    assert backoff.delay(6, retry_after_s=5.0) == 30.0  # the backoff is longer: it stands
    assert Backoff(initial_s=1.0, max_s=30.0, jitter=0.0).delay(1, retry_after_s=90.0) == 30.0


def test_an_outage_of_thousands_of_attempts_still_has_a_delay() -> None:
    """Spool replay and the alert store's retries go on for as long as the outage lasts."""
    backoff = Backoff(initial_s=0.5, max_s=30.0, jitter=0.0)
    assert backoff.delay(5000) == 30.0


def test_the_alert_store_waiting_list_outlasts_thousands_of_refused_writes(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path)
    pending = PendingDetections(store.apply, clock=lambda: store.now)
    store.writable = False
    pending.submit(gas("raised", "red", 0), {})
    for _ in range(1100):  # an alert store unwritable for hours, retried at the cap
        store.now += 1000.0
        assert pending.due() and pending.retry(10) == 0
    store.writable = True
    store.now += 1000.0
    assert pending.retry(10) == 1 and not pending.degraded
    (alert,) = store.book.find()
    assert alert.colour == "red"
