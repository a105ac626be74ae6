"""End to end through a real Mosquitto and a real InfluxDB: exactly the valid readings stored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from collector.influx import query_sync
from tests.conftest import influx_rows, poll

NOW = time.time()

REGISTRY = """
[units."Gusu, Pingjiang = checkpoint"]
name = "Pingjiang checkpoint"
kind = "checkpoint"
hierarchy.city = "su zhou"
hierarchy.district = "姑苏区"
hierarchy.street = "ping,jiang"
hierarchy.community = "du=du"
hierarchy.grid = 'G "0412"'
hierarchy.micro_grid = "G0412-03"
safe_capacity = 800

[units.lot-p2]
kind = "parking"
hierarchy.city = "su zhou"
hierarchy.district = "姑苏区"
hierarchy.street = "ping,jiang"
hierarchy.community = "du=du"
hierarchy.grid = "G0410"
capacity = 420

[units.chem-a]
kind = "chem_enterprise"
hierarchy = { city = "su zhou", district = "zjg", street = "park", community = "e", grid = "CP1" }

[devices.cam-1]
unit = "Gusu, Pingjiang = checkpoint"
family = "camera"

[devices.park-1]
unit = "lot-p2"
family = "parking"

[devices.chem-1]
unit = "chem-a"
family = "chem"
"""


def topic(family: str, device: str) -> str:
    return f"smartunit/v1/{family}/{device}/data"


# (topic, payload, expected valid readings as (family, device, ts seconds) that it adds)
VALID: list[tuple[str, object]] = [
    # single objects, device time as epoch seconds
    (topic("camera", "cam-1"), {"ts": NOW - 10, "seq": 1, "people": 12, "vehicles": 3}),
    (
        topic("camera", "cam-1"),
        {"ts": NOW - 9, "seq": 2, "people": 15, "vehicles": 4, "interval_s": 10},
    ),
    # RFC 3339 string time, with an offset
    (
        topic("camera", "cam-1"),
        {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(NOW - 8)),
            "seq": 3,
            "people": 9,
            "vehicles": 0,
        },
    ),
    # a backlog array after a reconnect, out of order, with a late reading from an hour ago
    (
        topic("camera", "cam-1"),
        [
            {"ts": NOW - 5, "seq": 6, "people": 1, "vehicles": 1},
            {"ts": NOW - 7, "seq": 4, "people": 2, "vehicles": 2},
            {"ts": NOW - 3600, "seq": 5, "people": 3, "vehicles": 3},
        ],
    ),
    # duplicates: the same reading again, alone and inside an array
    (topic("camera", "cam-1"), {"ts": NOW - 10, "seq": 1, "people": 12, "vehicles": 3}),
    (
        topic("camera", "cam-1"),
        [{"ts": NOW - 9, "seq": 2, "people": 15, "vehicles": 4, "interval_s": 10}],
    ),
    # parking: capacity from the registry, and sent by the device
    (topic("parking", "park-1"), {"ts": NOW - 20, "seq": 1, "occupied": 400}),
    (topic("parking", "park-1"), {"ts": NOW - 19, "seq": 2, "occupied": 430, "capacity": 420}),
    (
        topic("parking", "park-1"),
        [{"ts": NOW - 18, "seq": 3, "occupied": 0}, {"ts": NOW - 17, "seq": 4, "occupied": 1}],
    ),
    # chem: integers and floats for the same quantity must not conflict
    (
        topic("chem", "chem-1"),
        {"ts": NOW - 30, "seq": 1, "readings": {"lel_pct": 3, "h2s_ppm": 1.1, "temp_c": 41.0}},
    ),
    (
        topic("chem", "chem-1"),
        {
            "ts": NOW - 29,
            "seq": 2,
            "readings": {"lel_pct": 3.5, "pressure_kpa": 310.2, "level_pct": 62},
        },
    ),
    # no ts: the time of receipt
    (topic("chem", "chem-1"), {"seq": 3, "readings": {"lel_pct": 2.0}}),
    # unregistered device: stored under unit _unregistered
    (topic("camera", "cam-unknown-7"), {"ts": NOW - 4, "seq": 1, "people": 5, "vehicles": 0}),
    # the payload may name its device, if it names the topic's
    (topic("parking", "park-1"), {"ts": NOW - 16, "device": "park-1", "occupied": 2}),
]

EXPECTED_DISTINCT = {
    "camera": 6 + 1,  # ts -10, -9, -8, -7, -5, -3600 for cam-1; one for cam-unknown-7
    "parking": 5,
    "chem": 3,
}

# (topic, raw payload, expected reason) - each costs exactly one rejection
INVALID: list[tuple[str, bytes, str]] = [
    (topic("camera", "cam-1"), b'{"people": 1', "bad_json"),
    (topic("camera", "cam-1"), b'{"ts": 1, "people": NaN}', "bad_json"),
    (topic("camera", "cam-1"), json.dumps({"people": "12", "vehicles": 1}).encode(), "wrong_type"),
    (topic("camera", "cam-1"), json.dumps({"people": 3.5}).encode(), "wrong_type"),
    (topic("camera", "cam-1"), json.dumps({"people": True}).encode(), "wrong_type"),
    (topic("camera", "cam-1"), json.dumps({"people": 1, "vehicles": -1}).encode(), "out_of_range"),
    (topic("parking", "park-1"), json.dumps({"occupied": -5}).encode(), "out_of_range"),
    (topic("parking", "park-1"), json.dumps({"capacity": 10}).encode(), "missing_field"),
    (topic("camera", "cam-1"), json.dumps({"interval_s": 10}).encode(), "missing_field"),
    (topic("bus", "bus-1"), json.dumps({"people": 1}).encode(), "unknown_family"),
    (topic("camera", "cam 1"), json.dumps({"people": 1}).encode(), "bad_device_id"),
    (topic("camera", "cam,1"), json.dumps({"people": 1}).encode(), "bad_device_id"),
    (topic("camera", 'cam"1'), json.dumps({"people": 1}).encode(), "bad_device_id"),
    (topic("camera", "cam=1"), json.dumps({"people": 1}).encode(), "bad_device_id"),
    (topic("camera", "摄像头1"), json.dumps({"people": 1}).encode(), "bad_device_id"),
    (
        topic("camera", "cam-1"),
        json.dumps({"people": 1, "device": "cam-2"}).encode(),
        "device_mismatch",
    ),
    (
        topic("camera", "cam-1"),
        json.dumps({"people": 1, "ts": NOW + 86400}).encode(),
        "ts_in_future",
    ),
    (
        topic("camera", "cam-1"),
        json.dumps({"people": 1, "ts": NOW * 1000}).encode(),
        "ts_in_future",
    ),
    (
        topic("camera", "cam-1"),
        json.dumps({"people": 1, "ts": "yesterday"}).encode(),
        "bad_timestamp",
    ),
    (
        topic("camera", "cam-1"),
        json.dumps({"people": 1, "ts": "2026-01-01T00:00:00"}).encode(),
        "bad_timestamp",
    ),
    (
        topic("camera", "cam-1"),
        json.dumps({"people": 1, "ts": NOW - 90 * 86400}).encode(),
        "ts_too_old",
    ),
    (
        topic("chem", "chem-1"),
        json.dumps({"readings": {"LEL %": 1.0}}).encode(),
        "bad_quantity_name",
    ),
    (topic("chem", "chem-1"), json.dumps({"readings": {"seq": 1.0}}).encode(), "bad_quantity_name"),
    (topic("chem", "chem-1"), json.dumps({"readings": {}}).encode(), "out_of_range"),
    (topic("chem", "chem-1"), json.dumps({"readings": {"lel_pct": "high"}}).encode(), "wrong_type"),
    (topic("parking", "cam-1"), json.dumps({"occupied": 1}).encode(), "family_mismatch"),
    (topic("camera", "cam-1"), b"42", "not_an_object"),
    (topic("camera", "cam-1"), b"[]", "empty_batch"),
    (topic("camera", "cam-1"), b"\xff\xfe not utf-8", "bad_json"),
]

# An array mixing good and bad objects: the good ones are stored, each bad one rejected.
MIXED = (
    topic("camera", "cam-1"),
    json.dumps(
        [
            {"ts": NOW - 100, "seq": 10, "people": 7, "vehicles": 7},
            {"ts": NOW - 101, "seq": 11, "people": -7},
            "not an object",
            {"ts": NOW - 102, "seq": 12, "people": 8, "vehicles": 8},
        ]
    ).encode(),
)
MIXED_REASONS = ["out_of_range", "not_an_object"]


@pytest.mark.slow
def test_exactly_the_distinct_valid_readings_are_stored(
    make_settings, run_collector, publisher, subscribe, tmp_path: Path
) -> None:
    registry = tmp_path / "registry.toml"
    registry.write_text(REGISTRY)
    settings = make_settings(registry)
    rejected = subscribe("smartunit/v1/_rejected/#")
    collector = run_collector(settings)

    for topic_name, payload in VALID:
        publisher.publish(topic_name, json.dumps(payload))
    for topic_name, raw, _ in INVALID:
        publisher.publish(topic_name, raw)
    publisher.publish(*MIXED)
    collector.wait_received(publisher.count)

    influx = settings.influx
    camera = influx_rows(influx, 'SELECT * FROM "camera" GROUP BY *')
    parking = influx_rows(influx, 'SELECT * FROM "parking" GROUP BY *')
    chem = influx_rows(influx, 'SELECT * FROM "chem" GROUP BY *')
    assert len(camera) == EXPECTED_DISTINCT["camera"] + 2  # + the two good ones of MIXED
    assert len(parking) == EXPECTED_DISTINCT["parking"]
    assert len(chem) == EXPECTED_DISTINCT["chem"]

    # Device time is the time of the point, to the millisecond.
    cam1 = {row["time"]: row for row in camera if row["device"] == "cam-1"}
    assert round((NOW - 3600) * 1000) in cam1
    late = cam1[round((NOW - 3600) * 1000)]
    assert (late["people"], late["vehicles"], late["seq"]) == (3, 3, 5)
    # Tags: the registry's hierarchy, hostile characters and all, read back as written.
    assert late["unit"] == "Gusu, Pingjiang = checkpoint"
    assert late["district"] == "姑苏区"
    assert late["street"] == "ping,jiang"
    assert late["community"] == "du=du"
    assert late["grid"] == 'G "0412"'
    assert late["micro_grid"] == "G0412-03"
    assert late["city"] == "su zhou"

    unknown = [row for row in camera if row["device"] == "cam-unknown-7"]
    assert [row["unit"] for row in unknown] == ["_unregistered"]
    assert "district" not in unknown[0] or not unknown[0]["district"]

    by_seq = {row["seq"]: row for row in parking if row["seq"] is not None}
    assert (by_seq[1]["capacity"], by_seq[1]["free"]) == (420, 20)  # capacity from registry
    assert (by_seq[2]["capacity"], by_seq[2]["free"]) == (420, 0)  # over-full: free stays 0
    assert {row["grid"] for row in parking} == {"G0410"}

    chem_by_seq = {row["seq"]: row for row in chem}
    assert chem_by_seq[1]["lel_pct"] == 3.0 and chem_by_seq[2]["lel_pct"] == 3.5
    assert chem_by_seq[3]["lel_pct"] == 2.0
    assert abs(chem_by_seq[3]["time"] / 1000 - time.time()) < 60  # time of receipt

    # Rejections: counted per reason, and republished with their reason.
    expected = Counter(reason for _, _, reason in INVALID) + Counter(MIXED_REASONS)
    assert collector.stats.rejections == expected
    messages = rejected.wait_for(sum(expected.values()))
    assert len(messages) == sum(expected.values())
    published = Counter(json.loads(m.payload)["reason"] for m in messages)
    assert published == expected
    hostile = [m for m in messages if json.loads(m.payload)["reason"] == "bad_device_id"]
    assert all(m.topic.startswith("smartunit/v1/_rejected/camera/") for m in hostile)
    assert collector.stats.lines_dropped == Counter()

    collector.stop()


@pytest.mark.slow
def test_broker_refuses_control_characters_in_topics(broker, make_settings, run_collector) -> None:
    """A newline in a device id never reaches the collector: Mosquitto drops the publisher.

    The collector rejects such ids too (tests/test_protocol.py), for brokers that let them by.
    """
    settings = make_settings()
    collector = run_collector(settings)
    dropped = threading.Event()
    hostile = paho.Client(CallbackAPIVersion.VERSION2, client_id="hostile-publisher")
    hostile.on_disconnect = lambda *_: dropped.set()
    hostile.connect("127.0.0.1", broker.port)
    hostile.loop_start()
    hostile.publish(topic("camera", "cam\n1"), b'{"people": 1}', qos=1)
    assert dropped.wait(10), "Mosquitto kept a client that published to a control-character topic"
    hostile.loop_stop()
    collector.wait_received(1)  # its own retained status
    assert not influx_rows(settings.influx, 'SELECT * FROM "camera"')
    collector.stop()


@pytest.mark.slow
def test_status_messages_are_stored(make_settings, run_collector, publisher) -> None:
    settings = make_settings()
    collector = run_collector(settings)
    publisher.publish("smartunit/v1/camera/cam-9/status", '{"state": "online"}', retain=True)
    publisher.publish("smartunit/v1/camera/cam-9/status", '{"state": "asleep"}')
    publisher.publish("smartunit/v1/camera/cam-9/status", '{"state": "offline", "ts": 1}')
    collector.wait_received(publisher.count + 1)  # + the collector's own retained status
    status = influx_rows(settings.influx, 'SELECT * FROM "device_status" GROUP BY *')
    assert [(r["device"], r["state"], r["online"]) for r in status if r["time"] > 1000] == [
        ("cam-9", "online", 1)
    ]
    assert collector.stats.rejections["bad_status"] == 1
    # ts 1 is 1970: as old for a status as for a reading
    assert collector.stats.rejections["ts_too_old"] == 1
    assert not any(r["state"] == "offline" for r in status)
    publisher.publish("smartunit/v1/camera/cam-9/status", b"", retain=True)
    collector.stop()


@pytest.mark.slow
def test_a_status_is_validated_like_a_reading(
    make_settings, run_collector, publisher, subscribe
) -> None:
    """Size, time window and rate limit hold for a status as for a reading: a status with an
    absurd time never reaches InfluxDB, which would refuse its whole batch for it."""
    settings = make_settings(
        ingest={"max_payload_bytes": 1024, "device_rate_per_s": 0.5, "device_burst": 5}
    )
    quarantine = subscribe("smartunit/v1/_rejected/camera/#")
    collector = run_collector(settings)
    now = time.time()
    refused = [
        ({"state": "online", "ts": 1e300}, "ts_in_future"),
        ({"state": "online", "ts": now + 100 * 365 * 86400}, "ts_in_future"),
        ({"state": "online", "ts": "2126-01-01T00:00:00Z"}, "ts_in_future"),
        ({"state": "offline", "ts": now - 90 * 86400}, "ts_too_old"),
        ({"state": "online", "firmware": "x" * 2000}, "payload_too_large"),
    ]
    for k, (payload, _) in enumerate(refused):
        publisher.publish(f"smartunit/v1/camera/cam-st-{k}/status", json.dumps(payload))
        publisher.publish(topic("camera", "cam-live"), json.dumps({"ts": now - k, "people": k}))
    flood = 30
    for k in range(flood):  # a device flapping: statuses count against its rate limit
        state = "online" if k % 2 else "offline"
        publisher.publish(
            "smartunit/v1/camera/cam-st-flap/status",
            json.dumps({"state": state, "ts": now - 30 + k * 0.1}),
        )
    influx = settings.influx
    live = poll(
        lambda: influx_rows(influx, """SELECT * FROM "camera" WHERE "device" = 'cam-live'"""),
        lambda rows: len(rows) >= len(refused),
    )
    assert len(live) == len(refused)  # every reading next to a refused status is stored

    def flap_rows() -> list[dict]:
        query = """SELECT * FROM "device_status" WHERE "device" = 'cam-st-flap'"""
        return influx_rows(influx, query)

    flapped, limited = poll(
        lambda: (flap_rows(), collector.stats.rejections["rate_limited"]),
        lambda found: len(found[0]) + found[1] >= flood,
    )
    assert limited >= 1 and len(flapped) + limited == flood  # limited, and each counted

    expected = Counter(reason for _, reason in refused)
    assert poll(lambda: collector.stats.rejections - Counter(rate_limited=limited), expected.__eq__)
    reasons = poll(
        lambda: Counter(json.loads(m.payload)["reason"] for m in quarantine.messages),
        expected.__eq__,
    )
    assert reasons == expected  # quarantined with their reasons; rate_limited is not echoed
    stored = influx_rows(
        influx, r"""SELECT * FROM "device_status" WHERE "device" =~ /^cam-st-\d/"""
    )
    assert stored == []
    assert collector.stats.lines_dropped == Counter()  # InfluxDB never had to refuse a line
    collector.stop()


@pytest.mark.slow
def test_registry_edit_moves_a_device_without_restart(
    make_settings, run_collector, publisher, tmp_path: Path
) -> None:
    registry = tmp_path / "registry.toml"
    registry.write_text(REGISTRY)
    settings = make_settings(registry)
    collector = run_collector(settings)
    publisher.publish(topic("camera", "cam-1"), json.dumps({"ts": NOW - 50, "people": 1}))
    collector.wait_received(publisher.count + 1)

    # Move cam-1 to the lot's unit, and re-cut that unit into another grid.
    moved = REGISTRY.replace(
        '[devices.cam-1]\nunit = "Gusu, Pingjiang = checkpoint"', '[devices.cam-1]\nunit = "lot-p2"'
    ).replace('grid = "G0410"', 'grid = "G0499"')
    assert moved != REGISTRY
    registry.write_text(moved)
    assert poll(lambda: collector.holder.reloads, lambda n: n >= 1, 10, 0.05) == 1

    # A broken edit is refused and the last good registry stays in force.
    registry.write_text(moved + "\n[devices.bad]\nunit = 'nowhere'\nfamily = 'camera'\n")
    deadline = time.monotonic() + 10
    while collector.holder.reload_failures < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert collector.holder.reload_failures == 1

    publisher.publish(topic("camera", "cam-1"), json.dumps({"ts": NOW - 40, "people": 2}))
    collector.wait_received(publisher.count + 1)
    rows = influx_rows(settings.influx, 'SELECT * FROM "camera" GROUP BY *')
    placed = {r["people"]: (r["unit"], r["grid"]) for r in rows}
    assert placed == {1: ("Gusu, Pingjiang = checkpoint", 'G "0412"'), 2: ("lot-p2", "G0499")}
    collector.stop()


def list_unregistered(config: Path, env: dict[str, str]) -> str:
    command = [sys.executable, "-m", "collector.cli", "devices", "--unregistered"]
    done = subprocess.run(
        [*command, "--config", str(config)], capture_output=True, text=True, env=env, check=True
    )
    return done.stdout


@pytest.mark.slow
def test_devices_unregistered_lists_unknown_devices(
    make_settings, run_collector, publisher, tmp_path: Path, broker, influxdb, database
) -> None:
    registry = tmp_path / "registry.toml"
    registry.write_text(REGISTRY)
    settings = make_settings(registry)
    collector = run_collector(settings)
    publisher.publish(topic("camera", "cam-1"), json.dumps({"people": 1}))
    publisher.publish(topic("chem", "stray-gas-3"), json.dumps({"readings": {"lel_pct": 1}}))
    publisher.publish(
        topic("chem", "stray-gas-3"), json.dumps([{"ts": NOW - 5, "readings": {"lel_pct": 2}}])
    )
    collector.wait_received(publisher.count + 1)
    collector.stop()

    config = tmp_path / "smartunit.toml"
    config.write_text(f'[registry]\npath = "{registry}"\n')
    env = {**os.environ, "SMARTUNIT_INFLUX_URL": influxdb.url, "SMARTUNIT_INFLUX_DB": database}
    out = list_unregistered(config, env)
    lines = [line.split("\t") for line in out.strip().splitlines()[1:]]
    assert [(d, f, n) for d, f, _, n in lines] == [("stray-gas-3", "chem", "2")]

    # Once registered, it is no longer listed.
    registry.write_text(REGISTRY + '\n[devices.stray-gas-3]\nunit = "chem-a"\nfamily = "chem"\n')
    out = list_unregistered(config, env)
    assert "no unregistered devices" in out
    assert query_sync(settings.influx, "SHOW MEASUREMENTS")


def test_a_half_written_registry_is_never_loaded(tmp_path: Path) -> None:
    """Editors truncate, then write: the watcher waits for the file to settle."""
    from collector.registry import Registry, RegistryHolder

    path = tmp_path / "registry.toml"
    path.write_text(REGISTRY)
    holder = RegistryHolder(Registry.load(path), path)
    path.write_text("")  # the editor has truncated the file ...
    assert holder.reload_if_changed() is False  # ... a first look only notes the change
    path.write_text(REGISTRY.replace('grid = "G0410"', 'grid = "G0411"'))  # ... and wrote it
    assert holder.reload_if_changed() is False  # changed again since: still settling
    assert holder.reload_if_changed() is True  # unchanged between two looks: loaded
    assert "cam-1" in holder.current.devices
    assert holder.current.units["lot-p2"].hierarchy.grid == "G0411"
    path.write_text(REGISTRY)
    assert holder.reload_now() is True  # an operator's reload does not wait


@pytest.mark.slow
@pytest.mark.parametrize("receiver", ["bulk", "paho"])
def test_a_retained_reading_is_refused_when_the_broker_replays_it(
    receiver, make_settings, run_collector, publisher, subscribe
) -> None:
    """A broker hands every retained message to each new subscription: a reading firmware
    retained would become a new reading at every reconnect. A retained status is fine."""
    settings = make_settings(mqtt={"receiver": receiver})
    device = f"cam-retain-{receiver}"
    data, status = topic("camera", device), f"smartunit/v1/camera/{device}/status"
    influx = settings.influx
    readings = f"""SELECT * FROM "camera" WHERE "device" = '{device}'"""
    statuses = f"""SELECT * FROM "device_status" WHERE "device" = '{device}'"""
    collector = run_collector(settings)
    publisher.publish(status, '{"state": "online"}', retain=True)
    publisher.publish(data, '{"people": 4}', retain=True)  # no ts: the time of receipt
    assert len(poll(lambda: influx_rows(influx, readings), len)) == 1  # live: a reading
    assert len(poll(lambda: influx_rows(influx, statuses), len)) == 1
    assert collector.stats.rejections == Counter()
    collector.stop()
    # Sent while the collector is away: the broker keeps it for the session as well.
    publisher.publish(data, json.dumps({"people": 5, "ts": time.time()}), retain=True)

    quarantine = subscribe(f"smartunit/v1/_rejected/camera/{device}")
    collector = run_collector(settings)  # the same session resumes; retained come again
    assert len(poll(lambda: influx_rows(influx, statuses), lambda rows: len(rows) >= 2)) == 2
    found = poll(
        lambda: (influx_rows(influx, readings), collector.stats.rejections["retained"]),
        lambda found: len(found[0]) >= 3 or (len(found[0]) >= 2 and found[1] >= 1),
    )
    # the session's copy stored; the replayed retained one refused and counted
    assert ([row["people"] for row in found[0]], found[1]) == ([4, 5], 1)
    (copy,) = quarantine.wait_for(1)
    assert json.loads(copy.payload)["reason"] == "retained"
    collector.stop()
    publisher.publish(data, b"", retain=True)  # the broker is shared by the session
    publisher.publish(status, b"", retain=True)


@pytest.mark.slow
def test_a_retained_on_site_acknowledgement_is_not_replayed_onto_a_reopened_alert(
    make_settings, run_collector, publisher, subscribe
) -> None:
    """An acknowledgement is an act, once: replayed at a reconnect, it would silence an
    alert that has come back since. Refused like any bad input: counted, quarantined."""
    from collector.alerts.model import State
    from tests.test_downlink import raised

    settings = make_settings()
    collector = run_collector(settings)
    book = collector.collector.alerts
    (red,) = book.on_detection(raised("gas-ret", "retain-unit", "red"))
    ack = "smartunit/v1/units/retain-unit/ack"
    publisher.publish(ack, json.dumps({"alert_id": red.alert_id, "actor": "g1"}), retain=True)
    assert poll(lambda: book.get(red.alert_id).state, State.ACKNOWLEDGED.__eq__)
    now = round(time.time() * 1000)
    book.on_detection(replace(raised("gas-ret", "retain-unit", "green"), kind="cleared"))
    book.resolve(red.alert_id, actor="desk", now_ms=now)
    book.on_detection(raised("gas-ret", "retain-unit", "red"))  # the fix did not hold
    assert book.get(red.alert_id).state == State.REOPENED
    collector.stop()

    quarantine = subscribe("smartunit/v1/_rejected/units/retain-unit")
    collector = run_collector(settings)  # the session resumes; the retained ack comes again
    book = collector.collector.alerts
    assert poll(lambda: collector.stats.rejections["retained"], lambda n: n >= 1) == 1
    (copy,) = quarantine.wait_for(1)
    assert json.loads(copy.payload)["reason"] == "retained"
    assert json.loads(copy.payload)["topic"] == ack
    assert book.get(red.alert_id).state == State.REOPENED  # still needs a person
    acks = [e for e in book.history(red.alert_id) if e.type.value == "acknowledged"]
    assert len(acks) == 1
    collector.stop()
    publisher.publish(ack, b"", retain=True)
