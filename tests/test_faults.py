"""Faults under load, with real processes: nothing is lost, counted by the devices' seq.

A load thread plays ten devices publishing at QoS 1, each with its own ``seq`` from 1,
and, like firmware, sending again what the broker did not acknowledge. After the fault
and the recovery, every device's seqs 1..n must be in InfluxDB exactly as points
(duplicates collapse: same series and device time), none missing.

The four faults the service must ride out: InfluxDB killed for 30 s; the collector SIGKILLed and
restarted; the broker restarted (persistence on); the webhook receiver down (30 s here,
not two minutes, with the retry backoff capped at 2 s instead of 300 s: the same rounds
of retries in a test that stays under a minute).
"""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path

import pytest

from collector.config import InfluxSettings, ReceiverSettings
from collector.errors import StoreError
from fieldtools.demo import wait_for_collector
from fieldtools.localservices import InfluxDB, Mosquitto, free_port, spawn, stop_process
from tests.conftest import Publisher, collector_env, influx_rows, poll
from tests.receivers import SECRET, WorkOrders, serve

PRESETS = Path(__file__).resolve().parent.parent / "config" / "rules.presets.toml"

DEVICES = [f"cam-load-{k}" for k in range(10)]


class Load:
    """Ten cameras, ``rate`` messages per second in all, until stopped."""

    def __init__(self, broker, name: str, rate: float = 200.0) -> None:
        self.publisher = Publisher(broker, name)
        self.publisher.client.reconnect_delay_set(0.2, 1)  # type: ignore[arg-type]  # paho takes seconds as float
        self.sent = dict.fromkeys(DEVICES, 0)
        self._period = len(DEVICES) / rate
        self._stop = threading.Event()
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._base = time.time()
        self._thread.start()

    def _run(self) -> None:
        try:
            self._play()
        except BaseException as exc:  # the test must hear of it, not a thread warning
            self._failed = exc

    def _play(self) -> None:
        tick = time.monotonic()
        while not self._stop.is_set():
            for device in DEVICES:
                seq = self.sent[device] + 1
                body = {"ts": self._base + seq * 0.001, "seq": seq, "people": seq % 97}
                self._send(f"smartunit/v1/camera/{device}/data", json.dumps(body).encode())
                self.sent[device] = seq
            tick += self._period
            time.sleep(max(0.0, tick - time.monotonic()))

    def _send(self, topic: str, payload: bytes) -> None:
        """Until the broker acknowledges it: a device keeps what it could not deliver."""
        for _ in range(100):
            info = self.publisher.client.publish(topic, payload, qos=1)
            with contextlib.suppress(RuntimeError, ValueError):  # not connected right now
                info.wait_for_publish(2)
                if info.is_published():
                    return
            time.sleep(0.2)
        raise AssertionError(f"the broker never acknowledged {payload!r}")

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join(10)
        self.publisher.close()
        if self._failed is not None:
            raise AssertionError("the load stopped early") from self._failed
        return dict(self.sent)


def stored(influx: InfluxSettings) -> dict[str, tuple[int, int, int]]:
    """Per device: (points, distinct seqs, highest seq); nothing before the database exists."""
    out = {}
    query = (
        'SELECT count("seq") AS "points", count(distinct("seq")) AS "seqs", max("seq") AS "top" '
        'FROM "camera" WHERE "device" =~ /^cam-load-/ GROUP BY "device"'
    )
    with contextlib.suppress(StoreError):  # "database not found": none written yet
        for row in influx_rows(influx, query):
            out[row["device"]] = (row["points"], row["seqs"], row["top"])
    return out


def wait_all(influx: InfluxSettings, sent: dict[str, int], timeout_s: float = 40) -> dict:
    expected = {d: (n, n, n) for d, n in sent.items()}
    return poll(lambda: stored(influx), lambda found: found == expected, timeout_s, 0.25)


@pytest.mark.slow
def test_influxdb_killed_for_30_s_under_load_loses_nothing(
    broker, make_settings, run_collector, tmp_path: Path
) -> None:
    own = InfluxDB(tmp_path / "influx").start()
    settings = make_settings(
        influx={"url": own.url},
        ingest={"spool_after_s": 1.0, "retry_initial_s": 0.2, "retry_max_s": 1.0},
        detection={"statistical": None},
    )
    collector = run_collector(settings)
    load = Load(broker, "load-influx")
    time.sleep(3)
    own.kill()  # SIGKILL, mid-stream
    outage_end = time.monotonic() + 30
    spooled = 0
    while time.monotonic() < outage_end:
        time.sleep(1)
        spooled = max(spooled, collector.collector.spool.pending_bytes)
    own.start()
    time.sleep(3)
    sent = load.stop()
    found = wait_all(settings.influx, sent)
    assert found == {d: (n, n, n) for d, n in sent.items()}
    assert sum(sent.values()) > 30 * 150  # it was under load all along
    assert spooled > 0  # acknowledged to the broker from the spool, not left with it
    assert collector.stats.spool_replayed > 0
    collector.stop()
    own.stop()


@pytest.mark.slow
def test_collector_sigkilled_under_load_loses_nothing_and_duplicates_collapse(
    broker, influxdb, database, tmp_path: Path
) -> None:
    config = tmp_path / "smartunit.toml"
    config.write_text(f'[mqtt]\nclient_id = "kill-{database}"\n[detection]\nstatistical = ""\n')
    env = collector_env(broker, influxdb, database, tmp_path / "data")
    command = [sys.executable, "-m", "collector.cli", "run", "--config", str(config)]
    influx = InfluxSettings(url=influxdb.url, database=database)

    first = spawn(command, env=env, log_path=tmp_path / "first.log")
    wait_for_collector(broker.url, f"kill-{database}")
    load = Load(broker, "load-kill")
    time.sleep(4)
    first.send_signal(signal.SIGKILL)  # mid-batch: some written, some not acknowledged
    first.wait()
    time.sleep(3)  # the devices keep sending; the broker keeps the session's messages
    second = spawn(command, env=env, log_path=tmp_path / "second.log")
    try:
        time.sleep(3)
        sent = load.stop()
        found = wait_all(influx, sent)
        assert found == {d: (n, n, n) for d, n in sent.items()}, (
            tmp_path / "second.log"
        ).read_text()[-2000:]
    finally:
        stop_process(second)


@pytest.mark.slow
def test_broker_restarted_under_load_loses_nothing(
    make_settings, run_collector, tmp_path: Path
) -> None:
    own = Mosquitto(tmp_path / "mosquitto").start()  # persistence on, as shipped
    settings = make_settings(
        mqtt={"url": own.url, "reconnect_min_s": 0.2, "reconnect_max_s": 1.0},
        detection={"statistical": None},
    )
    collector = run_collector(settings)
    load = Load(own, "load-broker")
    time.sleep(3)
    before = sum(load.sent.values())
    own.stop()  # a restart: the session and its queued messages are saved on the way down
    time.sleep(1)
    own.start()
    time.sleep(4)
    sent = load.stop()
    found = wait_all(settings.influx, sent)
    assert found == {d: (n, n, n) for d, n in sent.items()}
    assert sum(sent.values()) > before + 300  # the load went on across the restart
    assert collector.collector is not None
    assert collector.collector.source.connects >= 2
    collector.stop()
    own.stop()


@pytest.mark.slow
def test_webhook_receiver_down_under_load_gets_every_event_once(
    broker, make_settings, run_collector, tmp_path: Path
) -> None:
    WorkOrders.reset(secret=SECRET)  # each key processed once
    port = free_port()  # nothing listens yet: connection refused, as when the system is down
    receiver = ReceiverSettings(
        name="orders", url=f"http://127.0.0.1:{port}/hook", secret=SECRET, timeout_s=1.0
    )
    settings = make_settings(
        detection={"statistical": None, "rules": [PRESETS]},
        alerts={"receivers": [receiver], "retry_initial_s": 0.2, "retry_max_s": 2.0},
    )
    collector = run_collector(settings)
    load = Load(broker, "load-webhook")
    gas = Publisher(broker, "gas-webhook")
    start = time.time() - 60
    for k in range(5):  # five sensors: level 1, then level 2, each held past for_s
        for offset, lel in ((0, 30.0), (6, 30.0), (7, 60.0), (13, 60.0)):
            body = {"ts": start + offset, "readings": {"lel_pct": lel}}
            gas.publish(f"smartunit/v1/chem/gas-down-{k}/data", json.dumps(body))
    gas.close()
    outage_end = time.monotonic() + 30
    book = collector.collector.alerts
    assert book is not None
    poll(book.outbox_counts, lambda c: c.get("pending", 0) >= 10, 10)
    time.sleep(max(0.0, outage_end - time.monotonic()))
    served = serve(WorkOrders, port)
    try:
        counts = poll(book.outbox_counts, lambda c: not c.get("pending"), 30, 0.2)
        sent = load.stop()
    finally:
        served.stop()
    assert counts.get("dead", 0) == 0 and counts.get("delivered", 0) > 0
    assert WorkOrders.bad_signatures == 0
    database = settings.data_dir / settings.alerts.database
    with contextlib.closing(sqlite3.connect(database)) as db:
        keys = [k for (k,) in db.execute("SELECT event_key FROM outbox WHERE receiver = 'orders'")]
    assert WorkOrders.keys_seen == set(keys)  # every event, each processed once
    assert len(WorkOrders.processed) == len(keys) == len(set(keys))
    for alert_id in {m["alert"]["id"] for m in WorkOrders.processed}:  # in order per alert
        seqs = [m["event"]["seq"] for m in WorkOrders.processed if m["alert"]["id"] == alert_id]
        assert seqs == sorted(seqs)
    types = {m["event"]["type"] for m in WorkOrders.processed}
    assert {"opened", "colour_changed"} <= types, types
    assert collector.collector.dispatcher is not None
    assert collector.collector.dispatcher.results["retried"] >= 10
    found = wait_all(settings.influx, sent)  # and the readings went on being stored
    assert found == {d: (n, n, n) for d, n in sent.items()}
    collector.stop()


@pytest.mark.slow
def test_an_alert_goes_out_while_influxdb_hangs_and_nothing_is_lost(
    broker,
    make_settings,
    run_collector,
    tmp_path: Path,
    receiver_url: str,
) -> None:
    """InfluxDB stopped (SIGSTOP: it takes connections and never answers), shorter than
    the collector waits for it (no write times out, nothing is spooled): the write queue
    fills, yet a gas alarm read meanwhile is judged and dispatched, and afterwards every
    reading is stored."""
    own = InfluxDB(tmp_path / "influx").start()
    assert own.proc is not None
    settings = make_settings(
        influx={"url": own.url, "timeout_s": 120.0},
        ingest={
            "batch_size": 50,
            "write_queue_batches": 1,
            "write_concurrency": 1,
            "flush_interval_ms": 50,
            "spool_after_s": 120.0,
        },
        detection={"statistical": None, "rules": [PRESETS]},
        alerts={"receivers": [ReceiverSettings(name="orders", url=receiver_url, secret=SECRET)]},
    )
    collector = run_collector(settings)
    load = Load(broker, "load-hang")
    time.sleep(1)
    own.proc.send_signal(signal.SIGSTOP)
    try:
        queue = collector.collector.writer.queue
        assert poll(queue.full, bool, 10)  # storage no longer keeps up
        time.sleep(1)  # ... and messages keep coming
        gas = Publisher(broker, "gas-hang")
        start = time.time() - 30
        for offset, lel in ((0, 60.0), (6, 60.0)):  # level 2 held past for_s
            gas.publish(
                "smartunit/v1/chem/gas-hang/data",
                json.dumps({"ts": start + offset, "readings": {"lel_pct": lel}}),
            )
        gas.close()
        opened = poll(
            lambda: [m for m in WorkOrders.processed if m["event"]["type"] == "opened"], bool, 20
        )
        assert opened and opened[0]["alert"]["device"] == "gas-hang"
        assert queue.full()  # InfluxDB was still hanging when it went out
    finally:
        own.proc.send_signal(signal.SIGCONT)
    sent = load.stop()
    found = wait_all(settings.influx, sent)
    assert found == {d: (n, n, n) for d, n in sent.items()}
    assert collector.stats.spool_replayed == 0  # waited for InfluxDB, as configured
    # what the alert path wrote meanwhile got its turn too: the detection, the annotation
    query = 'SELECT count("value") FROM "{}" WHERE "device" = \'gas-hang\''
    for measurement in ("detections", "alert_events"):
        assert poll(lambda m=measurement: influx_rows(settings.influx, query.format(m)), bool, 10)
    collector.stop()
    own.stop()


@pytest.mark.slow
def test_influxdb_down_at_start_then_fresh_loses_nothing(
    broker, make_settings, run_collector, publisher, tmp_path: Path
) -> None:
    """Its database did not exist and could not be created at start: the first write that
    finds it missing creates it."""
    own = InfluxDB(tmp_path / "influx", port=free_port())  # not started yet
    settings = make_settings(
        influx={"url": own.url},
        ingest={"spool_after_s": 1.0, "retry_initial_s": 0.2, "retry_max_s": 1.0},
    )
    collector = run_collector(settings)
    now = time.time()
    for seq in range(1, 21):
        body = {"ts": now - 20 + seq, "seq": seq, "people": seq}
        publisher.publish("smartunit/v1/camera/cam-load-0/data", json.dumps(body))
    collector.wait_received(20)
    own.start()
    try:
        assert wait_all(settings.influx, {"cam-load-0": 20}) == {"cam-load-0": (20, 20, 20)}
    finally:
        collector.stop()
        own.stop()


def test_a_collector_waiting_for_influxdb_at_start_stops_on_sigterm(
    broker, database, tmp_path: Path
) -> None:
    """InfluxDB hangs (SIGSTOP) and the collector waits for its answer at start (long
    timeout): a service manager's stop must not wait for InfluxDB."""
    hung = InfluxDB(tmp_path / "influx").start()
    assert hung.proc is not None
    hung.proc.send_signal(signal.SIGSTOP)
    config = tmp_path / "smartunit.toml"
    config.write_text("[influx]\ntimeout_s = 300.0\n")
    env = collector_env(broker, hung, database, tmp_path / "data")
    log = tmp_path / "collector.log"
    command = [sys.executable, "-m", "collector.cli", "run", "--config", str(config)]
    proc = spawn(command, env=env, log_path=log)
    try:
        assert poll(log.read_text, lambda text: "starting collector" in text, 30)
        time.sleep(1)  # waiting for InfluxDB to answer CREATE DATABASE
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()[-2000:]
        assert "nothing was received" in log.read_text()
    finally:
        stop_process(proc)
        hung.proc.send_signal(signal.SIGCONT)
        hung.stop()
