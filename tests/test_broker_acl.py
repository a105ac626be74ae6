"""The shipped Mosquitto ACL on a real broker: a device publishes only as itself."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from collector.localservices import Mosquitto

ROOT = Path(__file__).resolve().parent.parent


def client(port: int, user: str, password: str) -> paho.Client:
    # MQTT v5: the broker answers a refused QoS 1 publish with reason code 135 "not
    # authorized". (Mosquitto 2.0.11 sends that code to MQTT 3.1.1 clients too, which
    # paho reads as a protocol error and disconnects.)
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"acl-{user}", protocol=paho.MQTTv5)
    c.username_pw_set(user, password)
    connected = threading.Event()
    c.on_connect = lambda _c, _u, _f, reason, _p: reason.is_failure or connected.set()
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert connected.wait(10)
    return c


def test_devices_publish_only_their_own_topics(tmp_path: Path) -> None:
    passwords = tmp_path / "passwd"
    for user in ("cam-1", "cam-2", "smartunit-collector"):
        subprocess.run(
            [
                "mosquitto_passwd",
                "-b",
                *(["-c"] if not passwords.exists() else []),
                str(passwords),
                user,
                f"pw-{user}",
            ],
            check=True,
        )
    broker = Mosquitto(
        tmp_path / "broker",
        persistence=False,
        extra_config=(
            "allow_anonymous false\n"
            f"password_file {passwords}\n"
            f"acl_file {ROOT / 'config' / 'mosquitto.acl'}\n"
        ),
    ).start()
    try:
        seen: list[str] = []
        collector = client(broker.port, "smartunit-collector", "pw-smartunit-collector")
        collector.on_message = lambda _c, _u, m: seen.append(m.topic)
        collector.subscribe("smartunit/v1/+/+/data", qos=1)
        time.sleep(0.3)
        refused = []
        for topic in (
            "smartunit/v1/camera/cam-1/data",  # its own: delivered
            "smartunit/v1/camera/cam-2/data",  # another device's: refused by the broker
            "smartunit/v1/units/u1/alert",  # the downlink: not a device's to write
        ):
            # One connection per attempt: Mosquitto 2.0.11 answers a refused publish with
            # reason code 135 and then drops the connection.
            cam = client(broker.port, "cam-1", "pw-cam-1")
            answer: list[int] = []
            cam.on_publish = lambda _c, _u, _mid, reason, _p, answer=answer: answer.append(
                reason.value
            )
            cam.publish(topic, b'{"people": 1}', qos=1)
            deadline = time.monotonic() + 3
            while not answer and time.monotonic() < deadline:
                time.sleep(0.02)
            refused.append(answer == [135])
            cam.loop_stop()
            cam.disconnect()
        time.sleep(0.5)
        assert seen == ["smartunit/v1/camera/cam-1/data"]
        assert refused == [False, True, True]  # not authorized
        # without a password nobody gets in
        stranger = paho.Client(CallbackAPIVersion.VERSION2, client_id="stranger")
        codes: list[object] = []
        stranger.on_connect = lambda _c, _u, _f, reason, _p: codes.append(reason)
        stranger.connect("127.0.0.1", broker.port)
        stranger.loop_start()
        deadline = time.monotonic() + 5
        while not codes and time.monotonic() < deadline:
            time.sleep(0.05)
        stranger.loop_stop()
        assert codes and getattr(codes[0], "is_failure", False)
        collector.loop_stop()
        collector.disconnect()
    finally:
        broker.stop()
