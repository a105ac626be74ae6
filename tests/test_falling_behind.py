"""When what arrives is old, the collector says so: a metric, a stats field, an operator alert."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.test_alerts_e2e import wait_for


@pytest.mark.slow
def test_late_arrivals_raise_and_clear_the_operator_alert(
    make_settings, run_collector, publisher
) -> None:
    settings = make_settings(
        ingest={"stats_interval_s": 0.3, "behind_alert_s": 20.0},
        detection={"statistical": None},
    )
    collector = run_collector(settings)
    book = collector.collector.alerts

    def send(age_s: float, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            publisher.publish(
                "smartunit/v1/camera/cam-1/data",
                json.dumps({"ts": time.time() - age_s, "people": 3}),
            )
            time.sleep(0.02)

    send(age_s=0.0, seconds=1.0)  # on time: nothing to say
    assert not [a for a in book.find() if a.fingerprint.detector == "collector-behind"]

    send(age_s=90.0, seconds=1.5)  # every reading arrives 90 s after it was taken

    def behind() -> list:
        return [a for a in book.find() if a.fingerprint.detector == "collector-behind"]

    (alert,) = wait_for(behind, timeout_s=5)
    assert alert.colour == "orange" and alert.family == "system" and alert.condition_active
    assert alert.value is not None and 85 < alert.value < 100
    metrics = httpx.get(f"http://127.0.0.1:{settings.http.port}/metrics").text
    assert "smartunit_arrival_age_seconds" in metrics

    send(age_s=0.0, seconds=1.5)  # caught up
    assert wait_for(lambda: not behind()[0].condition_active, timeout_s=5)
    collector.stop()


def test_an_operator_alarm_waits_its_intervals_and_clears_below_half() -> None:
    from collector.operator import OperatorAlarm

    spool = OperatorAlarm(
        detector="spool-nearly-full", quantity="spool_fill", limit=0.8, collector="c1"
    )
    assert spool.update(0.5, 1) == []
    (raised,) = spool.update(0.85, 2)
    assert (raised.kind, raised.colour, raised.threshold) == ("raised", "orange", 0.8)
    assert spool.update(0.9, 3) == [] and spool.update(0.5, 4) == []  # still above half
    (cleared,) = spool.update(0.3, 5)
    assert (cleared.kind, cleared.colour, cleared.device) == ("cleared", "green", "c1")

    behind = OperatorAlarm(
        detector="collector-behind", quantity="arrival_age_s", limit=60, collector="c1", intervals=2
    )
    assert behind.update(90, 1) == []  # one interval is not yet a trend
    assert behind.update(10, 2) == [] and behind.update(90, 3) == []
    assert [e.kind for e in behind.update(95, 4)] == ["raised"]


def test_the_arrival_age_keeps_only_the_newest_values_and_restarts_when_taken() -> None:
    from collector.operator import RecentMedian

    ages = RecentMedian(keep=5)
    assert ages.take() is None  # nothing arrived: no figure, not zero
    for age in [100.0] * 10_000 + [1.0, 2.0, 3.0, 4.0, 5.0]:
        ages.add(age)
    assert len(ages) == 5  # bounded, however many messages an interval brings
    assert ages.take() == 3.0  # the old backlog no longer counts
    assert len(ages) == 0 and ages.take() is None
