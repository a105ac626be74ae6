"""Nothing is lost when InfluxDB goes away, when the collector restarts, or when it stops."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from collector.config import InfluxSettings
from fieldtools.localservices import InfluxDB
from tests.conftest import influx_rows, poll

NOW = time.time()


def camera(i: int) -> tuple[str, str]:
    return (
        "smartunit/v1/camera/cam-d/data",
        json.dumps({"ts": NOW - 1000 + i, "seq": i, "people": i, "vehicles": 0}),
    )


def seqs(influx: InfluxSettings) -> list[int]:
    return sorted(r["seq"] for r in influx_rows(influx, 'SELECT "seq" FROM "camera"'))


def wait_seqs(influx: InfluxSettings, expected: list[int], timeout_s: float = 30) -> list[int]:
    return poll(lambda: seqs(influx), lambda found: found == expected, timeout_s)


@pytest.mark.slow
def test_influxdb_down_then_back_loses_nothing(
    make_settings, run_collector, publisher, tmp_path: Path
) -> None:
    own = InfluxDB(tmp_path / "influx").start()
    settings = make_settings(
        influx={"url": own.url}, ingest={"retry_initial_s": 0.1, "retry_max_s": 0.5}
    )
    collector = run_collector(settings)
    for i in range(1, 51):
        publisher.publish(*camera(i))
    assert wait_seqs(settings.influx, list(range(1, 51))) == list(range(1, 51))

    own.kill()  # SIGKILL: no goodbye
    for i in range(51, 151):
        publisher.publish(*camera(i))
    time.sleep(1.0)
    assert collector.stats.write_retries > 0
    own.start()
    assert wait_seqs(settings.influx, list(range(1, 151))) == list(range(1, 151))
    collector.stop()
    own.stop()


@pytest.mark.slow
def test_readings_sent_while_the_collector_is_away_arrive_after_restart(
    make_settings, run_collector, publisher
) -> None:
    settings = make_settings()
    first = run_collector(settings)
    publisher.publish(*camera(1))
    first.wait_received(2)
    first.stop()
    for i in range(2, 41):  # the broker keeps them for the collector's session
        publisher.publish(*camera(i))
    second = run_collector(settings)
    assert wait_seqs(settings.influx, list(range(1, 41))) == list(range(1, 41))
    second.stop()


@pytest.mark.slow
def test_stop_flushes_everything_received(make_settings, run_collector, publisher) -> None:
    # A long flush interval: only the shutdown flush can write these in time.
    settings = make_settings(ingest={"flush_interval_ms": 60_000, "batch_size": 100_000})
    collector = run_collector(settings)
    source = collector.collector.source
    time.sleep(0.3)  # retained statuses of earlier collectors on this broker arrive first
    before = source.received
    for i in range(1, 201):
        publisher.publish(*camera(i))
    assert poll(lambda: source.received, lambda n: n >= before + 200) >= before + 200
    assert seqs(settings.influx) == []
    collector.stop()
    assert seqs(settings.influx) == list(range(1, 201))


@pytest.mark.slow
def test_broker_restart_loses_nothing(make_settings, run_collector, tmp_path: Path) -> None:
    """The collector reconnects by itself; the broker's persisted session keeps its queue."""
    from fieldtools.localservices import Mosquitto
    from tests.conftest import Publisher

    own = Mosquitto(tmp_path / "mosquitto").start()
    settings = make_settings(mqtt={"url": own.url, "reconnect_min_s": 0.5, "reconnect_max_s": 1})
    collector = run_collector(settings)
    publisher = Publisher(own, "pub-restart")
    for i in range(1, 21):
        publisher.publish(*camera(i))
    publisher.close()
    assert wait_seqs(settings.influx, list(range(1, 21))) == list(range(1, 21))

    own.stop()  # a clean broker stop saves its persistence file
    own.start()
    publisher = Publisher(own, "pub-restart")
    for i in range(21, 61):
        publisher.publish(*camera(i))
    publisher.close()
    assert wait_seqs(settings.influx, list(range(1, 61))) == list(range(1, 61))
    assert collector.collector is not None
    assert collector.collector.source.connects >= 2
    collector.stop()
    own.stop()


@pytest.mark.slow
def test_stopping_while_influxdb_is_down_neither_hangs_nor_loses(
    make_settings, run_collector, publisher, tmp_path: Path
) -> None:
    own = InfluxDB(tmp_path / "influx").start()
    settings = make_settings(
        influx={"url": own.url},
        ingest={"retry_initial_s": 0.1, "retry_max_s": 0.5, "shutdown_flush_s": 2.0},
    )
    first = run_collector(settings)
    for i in range(1, 11):
        publisher.publish(*camera(i))
    assert wait_seqs(settings.influx, list(range(1, 11))) == list(range(1, 11))
    own.kill()
    for i in range(11, 31):
        publisher.publish(*camera(i))
    time.sleep(0.5)
    first.stop()  # InfluxDB is gone: the flush gives up instead of hanging (stop() checks)

    own.start()
    second = run_collector(settings)  # the broker kept what was never acknowledged
    assert wait_seqs(settings.influx, list(range(1, 31))) == list(range(1, 31))
    second.stop()
    own.stop()


@pytest.mark.slow
@pytest.mark.parametrize("receiver", ["paho", "bulk"])
def test_both_receivers_store_and_resume_a_persistent_session(
    make_settings, run_collector, publisher, receiver: str
) -> None:
    settings = make_settings(mqtt={"receiver": receiver})
    first = run_collector(settings)
    for i in range(1, 21):
        publisher.publish(*camera(i))
    assert wait_seqs(settings.influx, list(range(1, 21))) == list(range(1, 21))
    first.stop()
    for i in range(21, 41):  # queued by the broker for the session while we are away
        publisher.publish(*camera(i))
    second = run_collector(settings)
    assert wait_seqs(settings.influx, list(range(1, 41))) == list(range(1, 41))
    assert type(second.collector.source).__name__ == (
        "BulkMqttSource" if receiver == "bulk" else "MqttSource"
    )
    second.stop()


def test_a_lone_batch_is_acknowledged_without_waiting_for_more(
    make_settings, run_collector, publisher
) -> None:
    """With writes in flight concurrently, the last batch of a burst must not wait for a
    next one to be acknowledged (its messages would stay with the broker, unacked)."""
    collector = run_collector(make_settings())
    for i in range(1, 6):
        publisher.publish(*camera(i))
    stored = poll(lambda: collector.stats.readings_stored, lambda n: n >= 5, timeout_s=10)
    assert stored == 5
