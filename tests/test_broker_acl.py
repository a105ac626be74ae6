"""The shipped Mosquitto ACL on a real broker with a real password file: a device publishes
only as itself, and only a unit's own panel principal may acknowledge its alerts."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import ValidationError

from collector.alerts.model import State
from collector.errors import ConfigError
from collector.registry import RegistryFile
from collector.unitlink import parse_unit_topic
from fieldtools.brokerauth import (
    COLLECTOR_USER,
    broker_acl,
    panel_acl,
    panel_user,
    write_password_file,
)
from fieldtools.localservices import BrokerAuth, Mosquitto
from tests.test_alerts_e2e import wait_for
from tests.test_downlink import alert_of

DEVICES = ("cam-1", "cam-2", "xinghua")  # "xinghua": a device named like a unit
UNITS = ("xinghua", "donghai")


def client(port: int, user: str, password: str) -> paho.Client:
    # MQTT v5: the broker answers a refused QoS 1 publish with reason code 135 "not
    # authorized". (Mosquitto 2.0.11 sends that code to MQTT 3.1.1 clients too, which
    # paho reads as a protocol error and disconnects.)
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"acl-{user}", protocol=paho.MQTTv5)
    c.username_pw_set(user, password)
    connected = threading.Event()

    def on_connect(_c: object, _u: object, _f: object, reason: Any, _p: object) -> None:
        if not reason.is_failure:
            connected.set()

    c.on_connect = on_connect
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert connected.wait(10)
    return c


def accepted(port: int, user: str, topic: str, payload: bytes = b'{"people": 1}') -> bool:
    """Whether the broker takes a QoS 1 publish from ``user`` on ``topic``."""
    # One connection per attempt: Mosquitto 2.0.11 answers a refused publish with reason
    # code 135 and then drops the connection.
    c = client(port, user, f"pw-{user}")
    answer: list[int] = []
    c.on_publish = lambda _c, _u, _mid, reason, _p: answer.append(reason.value)
    c.publish(topic, payload, qos=1)
    deadline = time.monotonic() + 5
    while not answer and time.monotonic() < deadline:
        time.sleep(0.02)
    c.loop_stop()
    c.disconnect()
    assert answer, f"no answer to a publish on {topic}"
    return answer != [135]  # 135: not authorized


@pytest.fixture
def secured_broker(tmp_path: Path):
    users = [*DEVICES, COLLECTOR_USER, *map(panel_user, UNITS)]
    auth = BrokerAuth(password_file=tmp_path / "passwd", acl_file=tmp_path / "mosquitto.acl")
    write_password_file(auth.password_file, {user: f"pw-{user}" for user in users})
    auth.acl_file.write_text(broker_acl(UNITS))
    broker = Mosquitto(tmp_path / "broker", persistence=False, auth=auth).start()
    yield broker
    broker.stop()


@pytest.mark.slow
def test_devices_publish_only_their_own_topics(secured_broker: Mosquitto) -> None:
    port = secured_broker.port
    seen: list[str] = []
    collector = client(port, COLLECTOR_USER, f"pw-{COLLECTOR_USER}")
    collector.on_message = lambda _c, _u, m: seen.append(m.topic)
    collector.subscribe("smartunit/v1/+/+/data", qos=1)
    time.sleep(0.3)
    attempts = {
        ("cam-1", "smartunit/v1/camera/cam-1/data"): True,  # its own
        ("cam-1", "smartunit/v1/camera/cam-2/data"): False,  # another device's
        ("cam-1", "smartunit/v1/units/u1/alert"): False,  # the downlink is the collector's
        # a device named like a unit reaches nothing under units/, whatever the family
        ("xinghua", "smartunit/v1/units/xinghua/data"): False,
        ("xinghua", "smartunit/v1/units/xinghua/ack"): False,
        ("xinghua", "smartunit/v1/_rejected/chem/xinghua"): False,
        # a panel acknowledges for its own unit only, and cannot forge the unit's state
        ("unit@xinghua", "smartunit/v1/units/xinghua/ack"): True,
        ("unit@xinghua", "smartunit/v1/units/donghai/ack"): False,
        ("unit@xinghua", "smartunit/v1/units/xinghua/alert"): False,
    }
    outcome = {attempt: accepted(port, *attempt) for attempt in attempts}
    assert outcome == attempts
    time.sleep(0.5)
    assert seen == ["smartunit/v1/camera/cam-1/data"]
    # without a password nobody gets in
    stranger = paho.Client(CallbackAPIVersion.VERSION2, client_id="stranger")
    codes: list[object] = []
    stranger.on_connect = lambda _c, _u, _f, reason, _p: codes.append(reason)
    stranger.connect("127.0.0.1", port)
    stranger.loop_start()
    deadline = time.monotonic() + 5
    while not codes and time.monotonic() < deadline:
        time.sleep(0.05)
    stranger.loop_stop()
    assert codes and getattr(codes[0], "is_failure", False)
    collector.loop_stop()
    collector.disconnect()


@pytest.mark.slow
def test_only_the_units_panel_acknowledges_its_alert(
    secured_broker: Mosquitto, make_settings, run_collector
) -> None:
    port = secured_broker.port
    url = f"mqtt://{COLLECTOR_USER}:pw-{COLLECTOR_USER}@127.0.0.1:{port}"
    collector = run_collector(make_settings(mqtt={"url": url}))
    book = collector.collector.alerts
    alert_id = alert_of(book, "gas-1", "xinghua")
    ack = json.dumps({"alert_id": alert_id, "actor": "guard-3"}).encode()
    # the device named like the unit, and the neighbouring unit's panel: refused by the broker
    assert not accepted(port, "xinghua", "smartunit/v1/units/xinghua/data", ack)
    assert not accepted(port, "xinghua", "smartunit/v1/units/xinghua/ack", ack)
    assert not accepted(port, "unit@donghai", "smartunit/v1/units/xinghua/ack", ack)
    assert accepted(port, "unit@xinghua", "smartunit/v1/units/xinghua/ack", ack)
    assert wait_for(lambda: book.get(alert_id).state == State.ACKNOWLEDGED)
    acks = [e.actor for e in book.history(alert_id) if e.type.value == "acknowledged"]
    assert acks == ["field:xinghua:guard-3"]
    collector.stop()


def test_no_registry_unit_can_pass_for_a_pseudo_unit_or_break_its_topics() -> None:
    hierarchy = {"city": "c", "district": "d", "street": "s", "community": "m", "grid": "g"}
    for unit in ("_fleet", "_collector", "a/b", "a+", "#"):
        with pytest.raises(ValidationError):
            RegistryFile.model_validate({"units": {unit: {"hierarchy": hierarchy}}})
        with pytest.raises(ConfigError):
            panel_acl([unit])
    RegistryFile.model_validate({"units": {"Gusu, Pingjiang": {"hierarchy": hierarchy}}})


def test_only_the_exact_unit_topics_are_parsed_as_such() -> None:
    assert parse_unit_topic("smartunit/v1/units/xinghua/ack") == ("xinghua", "ack")
    assert parse_unit_topic("smartunit/v1/units/xinghua/alert") == ("xinghua", "alert")
    for topic in (
        "smartunit/v1/units/xinghua/data",
        "smartunit/v1/units/xinghua/ack/more",
        "smartunit/v1/units//ack",
        "smartunit/v1/unitsx/xinghua/ack",
        "smartunit/v2/units/xinghua/ack",
        "/smartunit/v1/units/xinghua/ack",
    ):
        assert parse_unit_topic(topic) is None, topic
