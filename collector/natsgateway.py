"""The collector's MQTT 3.1.1 session with a NATS cluster's gateway (transport ``nats``).

Everything but device data goes over it: device status, the units' acknowledgements and
states, the collector's retained status with "offline" as its last will, the downlink
and the rejection copies. The gateway refuses MQTT 5, so this is paho-mqtt at 3.1.1 with
a persistent session (clean session off) and manual acknowledgement after hand-off, like
``collector.mqtt``; the data itself comes from JetStream (``collector.natssource``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from collector.config import MqttSettings
from collector.mqtt import OFFLINE, ONLINE, Inbox, make_client


class GatewaySession(Inbox):
    """The inbox, and the MQTT session; online once the session and the data are up."""

    _session_name = "MQTT connection to the NATS gateway"

    def __init__(
        self, settings: MqttSettings, subscriptions: Sequence[str], *, status_topic: str
    ) -> None:
        super().__init__(settings, subscriptions, status_topic=status_topic)
        self._link_up = False
        self._data_up = False
        self.link = make_client(
            settings,
            manual_ack=True,
            protocol=paho.MQTTv311,
            clean_session=False,
            will_topic=status_topic,
        )
        self.link.on_connect = self._on_connect
        self.link.on_subscribe = self._on_subscribe
        self.link.on_disconnect = self._on_disconnect
        self.link.on_message = self._on_message

    # -- the MQTT session (paho's network thread) ------------------------------------------

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if not self._session_up(reason_code):
            return
        client.subscribe([(topic, 1) for topic in self.subscriptions])

    def _on_subscribe(self, client: paho.Client, *_: Any) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._set_up, "link", True)

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._session_down(reason_code)
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                self._loop.call_soon_threadsafe(self._set_up, "link", False)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._receive(message)

    def _set_up(self, part: str, up: bool) -> None:
        """Online (retained, announced) once both the session and the data are up."""
        if part == "link":
            self._link_up = up
        else:
            self._data_up = up
        if self._link_up and self._data_up and not self.connected.is_set():
            self.connected.set()
            self.link.publish(self.status_topic, ONLINE, qos=1, retain=True)
        elif not (self._link_up and self._data_up):
            self.connected.clear()

    # -- the event loop's side -------------------------------------------------------------

    def start_session(self) -> None:
        self._loop = asyncio.get_running_loop()
        endpoint = self.settings.endpoint
        self.link.connect_async(endpoint.host, endpoint.port, keepalive=self.settings.keepalive_s)
        self.link.loop_start()

    def publish(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> None:
        self.link.publish(topic, payload, qos=qos, retain=retain)

    async def close_session(self) -> None:
        """Say "offline" (retained), then disconnect: the will is not sent."""
        if self.connected.is_set() or self._link_up:
            info = self.link.publish(self.status_topic, OFFLINE, qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                await asyncio.to_thread(info.wait_for_publish, 2.0)
        self.connected.clear()
        self.link.disconnect()
        self.link.loop_stop()
