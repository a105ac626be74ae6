"""The simulator behaves like firmware: last will, retained status, QoS 1, seq, backlog arrays."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from collector.config import parse_mqtt_url
from collector.families import FAMILIES
from collector.protocol import Decoder, Rejection
from collector.registry import Registry
from fieldtools.localservices import free_port
from fieldtools.simulate import one_shard, parse_shard
from fieldtools.simulator import (
    ANOMALY_KINDS,
    FAULTY_MESSAGES,
    Anomaly,
    ScheduledAnomaly,
    SimDevice,
    Simulator,
    SimulatorOptions,
    build_fleet,
)

ROOT = Path(__file__).resolve().parent.parent
SIMULATE = [sys.executable, "-m", "collector.cli", "simulate", "--generate", "1"]


def device(family: str, name: str, interval_s: float = 0.2) -> SimDevice:
    return SimDevice(
        id=name,
        family=family,
        unit="u",
        capacity=300,
        send_capacity=True,
        interval_s=interval_s,
        rng=random.Random(3),
    )


@pytest.mark.slow
def test_offline_device_leaves_a_will_and_sends_its_backlog_as_an_array(
    broker, subscribe, publisher, tmp_path: Path
) -> None:
    sub = subscribe("smartunit/v1/#")
    cam = device("camera", "sim-cam-t1")
    now = time.time()
    cam.anomaly = Anomaly("device_offline", now + 1.0, now + 2.5)
    chem = device("chem", "sim-chem-t1")
    labels = tmp_path / "labels.jsonl"
    sim = Simulator(
        [cam, chem],
        SimulatorOptions(endpoint=parse_mqtt_url(broker.url), duration_s=4.5, labels=labels),
    )
    asyncio.run(sim.run())
    time.sleep(0.3)

    by_topic: dict[str, list] = {}
    for message in sub.messages:
        by_topic.setdefault(message.topic, []).append(message)
    for simulated in (cam, chem):  # the broker is shared by the session
        publisher.publish(simulated.status_topic, b"", retain=True)
    status = [
        json.loads(m.payload)["state"] for m in by_topic["smartunit/v1/camera/sim-cam-t1/status"]
    ]
    # online, then the broker's last will when the connection dropped, then online again
    assert status[:3] == ["online", "offline", "online"]

    cam_data = [json.loads(m.payload) for m in by_topic["smartunit/v1/camera/sim-cam-t1/data"]]
    arrays = [p for p in cam_data if isinstance(p, list)]
    assert arrays, "the readings taken while offline come as a backlog array"
    readings = [r for p in cam_data for r in (p if isinstance(p, list) else [p])]
    seqs = sorted(r["seq"] for r in readings)
    assert seqs == list(range(1, len(seqs) + 1)), "no reading lost, none repeated"
    assert all(r["people"] >= 0 and r["vehicles"] >= 0 for r in readings)
    assert all(m.qos == 1 for m in by_topic["smartunit/v1/camera/sim-cam-t1/data"])

    chem_data = [json.loads(m.payload) for m in by_topic["smartunit/v1/chem/sim-chem-t1/data"]]
    assert {"lel_pct", "h2s_ppm", "temp_c", "pressure_kpa", "level_pct"} <= set(
        chem_data[0]["readings"]
    )
    (label,) = [json.loads(line) for line in labels.read_text().splitlines()]
    assert label["kind"] == "device_offline" and label["device"] == "sim-cam-t1"


def test_injected_anomalies_shape_the_values() -> None:
    gas = device("chem", "g")
    t0 = 1_795_377_198.0
    gas.anomaly = Anomaly("gas_leak", t0, t0 + 100)
    before = gas.sample(t0 - 1)["readings"]["lel_pct"]
    late = gas.sample(t0 + 90)["readings"]["lel_pct"]
    assert before < 5 < 50 < late

    stuck = device("parking", "p")
    stuck.anomaly = Anomaly("stuck_sensor", t0, t0 + 100)
    values = {stuck.sample(t0 + i)["occupied"] for i in range(20)}
    assert len(values) == 1

    dark = device("camera", "c")
    dark.anomaly = Anomaly("camera_dropout", t0, t0 + 10)
    assert dark.sample(t0 + 1) is None
    assert dark.sample(t0 + 11) is not None


@pytest.mark.slow
def test_simulate_command_writes_labels(broker, publisher, tmp_path: Path) -> None:
    labels = tmp_path / "labels.jsonl"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "collector.cli",
            "simulate",
            "--mqtt-url",
            broker.url,
            "--generate",
            "2",
            "--interval-scale",
            "0.05",
            "--duration",
            "4",
            "--anomaly-every",
            "0.5",
            "--anomaly-duration",
            "0.5",
            "1",
            "--labels",
            str(labels),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    for device in build_fleet(Registry.empty(), generated_per_family=2):
        publisher.publish(device.status_topic, b"", retain=True)  # the broker is shared
    assert done.returncode == 0, done.stderr
    assert f"simulating {2 * len(FAMILIES)} devices" in done.stdout
    found = [json.loads(line) for line in labels.read_text().splitlines()]
    assert len(found) >= 3
    assert all(x["start"] < x["end"] for x in found)


def test_each_faulty_message_is_rejected_for_the_reason_it_is_named_after() -> None:
    registry = Registry.load(ROOT / "config" / "registry.example.toml")
    decoder = Decoder()
    for family in FAMILIES:
        sim = device(family, f"faulty-{family}")
        for fault, reason in FAULTY_MESSAGES.items():
            now = time.time()
            decoded = decoder.decode(
                sim.data_topic, sim.faulty_message(fault, now), round(now * 1000), registry
            )
            reasons = (
                [decoded.reason]
                if isinstance(decoded, Rejection)
                else [r.reason for r in decoded.rejections]
            )
            assert reasons == [reason], (family, fault, decoded)
        assert sim.seq == 0  # a faulty message takes no sequence number from the readings


def test_a_schedule_names_when_which_device_what_and_how_long() -> None:
    assert ScheduledAnomaly.parse("5:gw:a:b:gas_leak:120") == ScheduledAnomaly(
        5.0, "gw:a:b", "gas_leak", 120.0
    )
    for bad in ("5:chem-01:gas_leak", "x:chem-01:gas_leak:1", "5::gas_leak:1", "5:c:k:0"):
        with pytest.raises(argparse.ArgumentTypeError):
            ScheduledAnomaly.parse(bad)


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("1:no-such-device:gas_leak:10", "no simulated device 'no-such-device'"),
        ("1:sim-park-0001:gas_leak:10", "a parking device cannot show 'gas_leak'"),
    ],
)
def test_a_schedule_the_fleet_cannot_follow_is_refused_before_connecting(
    schedule: str, message: str
) -> None:
    done = subprocess.run(
        [*SIMULATE, "--mqtt-url", f"mqtt://127.0.0.1:{free_port()}", "--schedule", schedule],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr


def test_shards_of_a_fleet_hold_each_device_and_each_scheduled_anomaly_once() -> None:
    fleet = build_fleet(
        Registry.load(ROOT / "config" / "registry.example.toml"), generated_per_family=2
    )
    schedule = [ScheduledAnomaly(1.0, d.id, ANOMALY_KINDS[d.family][0], 5.0) for d in fleet]
    shards = [one_shard(fleet, schedule, (index, 3)) for index in range(3)]
    ids = [d.id for members, _ in shards for d in members]
    assert sorted(ids) == sorted(d.id for d in fleet) and all(d for d, _ in shards)
    for devices, scheduled in shards:
        assert [s.device for s in scheduled] == [d.id for d in devices]
    assert parse_shard("2/3") == (2, 3)
    for wrong in ("3/3", "-1/3", "1", "a/b", "0/0"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_shard(wrong)


def test_simulate_exits_non_zero_when_it_cannot_reach_the_broker() -> None:
    nobody_listens = f"mqtt://127.0.0.1:{free_port()}"
    done = subprocess.run(
        [*SIMULATE, "--mqtt-url", nobody_listens, "--duration", "5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "cannot connect to the MQTT broker at 127.0.0.1:" in done.stderr


@pytest.mark.slow
def test_a_scheduled_anomaly_comes_on_time_on_its_device_and_is_logged(
    broker, publisher, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fleet = [device("chem", "sim-chem-sched"), device("fire", "sim-fire-sched")]
    labels = tmp_path / "labels.jsonl"
    options = SimulatorOptions(
        endpoint=parse_mqtt_url(broker.url),
        duration_s=3.0,
        labels=labels,
        schedule=(ScheduledAnomaly(0.5, "sim-fire-sched", "smoke", 1.0),),
    )
    with caplog.at_level(logging.INFO, logger="fieldtools.simulator"):
        asyncio.run(Simulator(fleet, options).run())
    for simulated in fleet:
        publisher.publish(simulated.status_topic, b"", retain=True)  # the broker is shared
    (label,) = [json.loads(line) for line in labels.read_text().splitlines()]
    assert (label["device"], label["kind"]) == ("sim-fire-sched", "smoke")
    assert label["end"] - label["start"] == pytest.approx(1.0, abs=0.1)
    assert "injected an anomaly on sim-fire-sched (unit u): smoke for 1 s" in caplog.text
