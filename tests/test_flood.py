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
