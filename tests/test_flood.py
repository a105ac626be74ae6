"""A device flooding the broker is bounded without starving the others or costing their readings."""

from __future__ import annotations

import asyncio
import json
import random
import time

import pytest

from collector.config import MqttSettings
from collector.mqtt import MqttSource
from collector.mqttbulk import READ_SIZE, BulkMqttSource
from collector.ratelimit import DeviceRateLimit
from tests.conftest import Publisher, influx_rows, poll
from tests.test_alerts_e2e import wait_for
from tests.test_detection_e2e import wait_rows


def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    limit = DeviceRateLimit(rate_per_s=10, burst=5)
    assert sum(limit.allow("a", 100.0) for _ in range(20)) == 5  # the burst, at once
    assert sum(limit.allow("a", 101.0) for _ in range(20)) == 5  # refilled 10/s, capped at 5
    assert limit.allow("b", 101.0)  # other devices keep their own bucket
    assert sum(limit.allow("a", 101.2) for _ in range(5)) == 2  # 0.2 s at 10/s


def test_the_one_number_form_decides_as_a_token_bucket_does() -> None:
    rng = random.Random(6)
    for _ in range(100):
        rate, burst = rng.choice([0.5, 3, 20, 33.3]), rng.choice([1, 2, 5, 100])
        limit = DeviceRateLimit(rate_per_s=rate, burst=burst)
        buckets: dict[str, tuple[float, float]] = {}  # device -> (tokens, at)
        now = 1000.0
        for _ in range(500):
            now += rng.expovariate(rate * rng.choice([0.5, 1, 2, 5]))
            device = rng.choice("abc")
            tokens, at = buckets.get(device, (burst, now))
            tokens = min(burst, tokens + (now - at) * rate)
            expected = tokens >= 1.0
            buckets[device] = (tokens - expected, now)
            assert limit.allow(device, now) == expected


def test_forgetting_buckets_bounds_memory_and_only_lets_more_through() -> None:
    limit = DeviceRateLimit(rate_per_s=1, burst=1, max_devices=100)
    for k in range(1000):
        assert limit.allow(f"made-up-{k}", 0.0)
    assert len(limit._full_at) <= 100


@pytest.mark.slow
def test_a_flooding_device_is_limited_and_the_others_lose_nothing(
    make_settings, run_collector, publisher, subscribe
) -> None:
    settings = make_settings(ingest={"device_rate_per_s": 20.0, "device_burst": 100})
    collector = run_collector(settings)
    quarantine = subscribe("smartunit/v1/_rejected/#")
    now = time.time()
    started = time.monotonic()
    for k in range(1500):
        publisher.publish(
            "smartunit/v1/camera/cam-flood/data",
            json.dumps({"ts": now - 60 + k * 0.01, "people": k}),
        )
        if k % 50 == 0:  # a well-behaved neighbour, in the middle of the flood
            publisher.publish(
                "smartunit/v1/camera/cam-calm/data",
                json.dumps({"ts": now - 60 + k * 0.01, "people": 1, "seq": k}),
            )
    elapsed = time.monotonic() - started
    calm = wait_rows(settings.influx, """SELECT * FROM "camera" WHERE "device" = 'cam-calm'""", 30)
    assert len(calm) == 30  # every reading of the neighbour stored
    query = """SELECT * FROM "camera" WHERE "device" = 'cam-flood'"""
    # each message stored or counted, none lost silently
    flood, limited = poll(
        lambda: (influx_rows(settings.influx, query), collector.stats.rejections["rate_limited"]),
        lambda found: len(found[0]) + found[1] >= 1500,
    )
    assert len(flood) + limited == 1500
    assert 100 <= len(flood) <= 100 + 20 * (elapsed + 2)  # the burst, then the rate
    time.sleep(0.5)
    reasons = {json.loads(m.payload)["reason"] for m in quarantine.messages}
    assert "rate_limited" not in reasons  # the flood is not echoed back to the broker
    collector.stop()


@pytest.mark.parametrize("receiver", ["bulk", "paho"])
def test_a_qos0_flood_the_collector_cannot_take_yet_stays_bounded(broker, receiver) -> None:
    """QoS 0 messages are not counted by the receive-maximum: the receiver stops reading
    when its inbox is full, so a flood waits at the broker instead of in our memory."""
    kind = BulkMqttSource if receiver == "bulk" else MqttSource

    limit = 100
    payload = b"x" * 200
    sent = 5_000  # ~1.1 MB: many reads' worth

    async def flood() -> tuple[int, int, int]:
        settings = MqttSettings(
            url=broker.url, client_id=f"qos0-{receiver}", receive_maximum=limit, receiver=receiver
        )
        source = kind(settings, ["smartunit/v1/camera/+/data"], status_topic="s/q0")
        source.start()
        while not source.connected.is_set():
            await asyncio.sleep(0.05)
        device = Publisher(broker, "qos0-flooder")
        for _ in range(sent):
            device.client.publish("smartunit/v1/camera/cam-q0/data", payload, qos=0)
        await asyncio.sleep(2)  # nothing is drained meanwhile: storage is stuck
        held = source.backlog
        taken = 0
        for _ in range(200):  # storage back: the decode task takes everything in turn
            taken += len(source.drain(1000))
            await asyncio.sleep(0.02)
        device.close()
        await source.aclose()
        return held, taken, source.reads_paused

    held, taken, paused = asyncio.run(flood())
    per_read = READ_SIZE // len(payload) + 1 if receiver == "bulk" else 1  # paho: per message
    assert held < limit + per_read  # one read past the limit at most, not the whole flood
    assert paused > 0
    assert taken > held  # reading went on once there was room


def rate_alerts(collector, detector: str) -> list:
    return [a for a in collector.collector.alerts.find() if a.fingerprint.detector == detector]


@pytest.mark.slow
def test_a_device_over_its_rate_limit_raises_an_operator_alert_naming_it(
    make_settings, run_collector, publisher
) -> None:
    settings = make_settings(
        ingest={"device_rate_per_s": 1.0, "device_burst": 5}, detection={"statistical": None}
    )
    collector = run_collector(settings)
    now = time.time()
    for k in range(20):
        publisher.publish(
            "smartunit/v1/camera/cam-loud/data",
            json.dumps({"ts": now - 20 + k * 0.01, "people": k}),
        )
    publisher.publish("smartunit/v1/camera/cam-quiet/data", json.dumps({"ts": now, "people": 1}))
    (alert,) = wait_for(lambda: rate_alerts(collector, "rate-limited"), timeout_s=20)
    assert alert.fingerprint.device == "cam-loud"  # the device is named, not only counted
    assert alert.family == "system" and alert.condition_active
    assert alert.value is not None and alert.value >= 1  # messages refused in an interval
    assert not rate_alerts(collector, "rate-limited-devices")
    # back under its limit for a while: the condition clears by itself
    assert wait_for(lambda: not rate_alerts(collector, "rate-limited")[0].condition_active, 30)
    query = """SELECT * FROM "detections" WHERE "detector" = 'rate-limited'"""
    kinds = [row["kind"] for row in wait_rows(settings.influx, query, 2)]
    assert kinds == ["raised", "cleared"]
    collector.stop()


@pytest.mark.slow
def test_many_devices_over_their_limit_raise_a_bounded_number_of_alerts(
    make_settings, run_collector, publisher
) -> None:
    from collector.operator import MAX_RATE_LIMIT_ALERTS

    settings = make_settings(
        ingest={"device_rate_per_s": 0.2, "device_burst": 2}, detection={"statistical": None}
    )
    collector = run_collector(settings)
    devices = MAX_RATE_LIMIT_ALERTS + 5
    now = time.time()
    for k in range(6):
        for d in range(devices):
            publisher.publish(
                f"smartunit/v1/camera/cam-herd-{d}/data",
                json.dumps({"ts": now - 20 + k * 0.01, "people": k}),
            )
    (fleet,) = wait_for(lambda: rate_alerts(collector, "rate-limited-devices"), timeout_s=20)
    assert fleet.family == "system" and fleet.value is not None
    assert MAX_RATE_LIMIT_ALERTS < fleet.value <= devices  # how many devices, in one alert
    time.sleep(2 * settings.ingest.stats_interval_s)  # more intervals: still bounded
    named = rate_alerts(collector, "rate-limited")
    assert len(named) == MAX_RATE_LIMIT_ALERTS
    assert len({a.fingerprint.device for a in named}) == MAX_RATE_LIMIT_ALERTS
    assert wait_for(
        lambda: not any(a.condition_active for a in rate_alerts(collector, "rate-limited-devices")),
        30,
    )
    collector.stop()


def test_rate_limit_alerts_stay_bounded_and_clear_when_devices_are_quiet() -> None:
    from collector.operator import (
        MAX_RATE_LIMIT_ALERTS,
        RATE_LIMIT_QUIET_INTERVALS,
        RateLimitWatch,
    )

    watch = RateLimitWatch(collector="c1")
    for k in range(1000):  # a thousand devices over their limit, the first ones the worst
        for _ in range(1000 - k):
            watch.refused(f"cam-{k}")
    events = watch.update(1)
    named = [e for e in events if e.detector == "rate-limited"]
    fleet = [e for e in events if e.detector == "rate-limited-devices"]
    assert [e.device for e in named] == [f"cam-{k}" for k in range(MAX_RATE_LIMIT_ALERTS)]
    assert {e.kind for e in named} == {"raised"} and named[0].value == 1000.0
    assert [(e.kind, e.value) for e in fleet] == [("raised", 1000.0)]
    for _ in range(100):  # the flood goes on: nothing new to say
        for k in range(1000):
            watch.refused(f"cam-{k}")
    assert watch.update(2) == []
    watch.refused("cam-0")  # one keeps flooding; the others are back under their limit
    for interval in range(RATE_LIMIT_QUIET_INTERVALS - 1):
        assert watch.update(3 + interval) == []
    for _ in range(20):
        watch.refused("cam-0")
    cleared = watch.update(100)
    assert sorted((e.kind, e.device) for e in cleared) == sorted(
        [("cleared", f"cam-{k}") for k in range(1, MAX_RATE_LIMIT_ALERTS)] + [("cleared", "c1")]
    )
    assert watch.named == {"cam-0"} and watch.devices == 1


def test_rate_limit_alerts_left_open_by_an_earlier_run_clear_too() -> None:
    from collector.alerts.model import Alert, Fingerprint, State
    from collector.operator import RATE_LIMIT_QUIET_INTERVALS, RateLimitWatch

    def alert(device: str, detector: str) -> Alert:
        return Alert(
            id=1,
            fingerprint=Fingerprint(device, "refused_messages", detector),
            state=State.OPEN,
            colour="yellow",
            family="system",
            unit="_collector",
            hierarchy={},
            value=5.0,
            started_at_ms=0,
            updated_at_ms=0,
            condition_active=True,
            condition_changed_at_ms=0,
        )

    watch = RateLimitWatch(collector="c1")
    watch.resume([alert("cam-9", "rate-limited"), alert("c1", "rate-limited-devices")])
    events = [e for k in range(RATE_LIMIT_QUIET_INTERVALS) for e in watch.update(k)]
    assert sorted((e.kind, e.device) for e in events) == [("cleared", "c1"), ("cleared", "cam-9")]
