"""The MQTT side of the collector: paho-mqtt's network thread feeding an asyncio consumer.

Since session 2 the default receiver is ``collector.mqttbulk`` (``mqtt.receiver =
"bulk"``), which drains twice as fast end to end; this one stays as ``"paho"``.

Why not aiomqtt here: on this hardware aiomqtt hands over about 8,000 messages/s, paho's
thread about 20,000, because aiomqtt resolves an asyncio future per message. The
collector keeps paho's thread and crosses into asyncio once per burst: the thread
appends to a deque and wakes the loop only when the deque was empty.

Durability: the session is persistent (MQTT v5, ``clean_start=False`` and a session
expiry) and messages are acknowledged by hand only after their readings were stored, so
a crash or a broker restart loses nothing: unacknowledged messages are delivered again.
The inbox is bounded by MQTT v5 receive-maximum, which caps how many unacknowledged
messages the broker may send us, so the broker holds the rest of the backlog, persisted;
QoS 0 messages it does not count, so both receivers also stop reading while the inbox
holds that many (``Inbox._full``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import ssl
import threading
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from collector.config import MqttSettings
from collector.logs import RateLimitedLog

log = logging.getLogger(__name__)


ONLINE = b'{"state":"online"}'
OFFLINE = b'{"state":"offline"}'


class Inbound(NamedTuple):
    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int  # which connection delivered it: acks are only valid on that one
    received_ms: int
    # The broker's retained copy, sent because a subscription was made (at every connect);
    # a message published while we were subscribed comes with this off.
    retained: bool


def make_client(
    settings: MqttSettings,
    *,
    client_id: str | None = None,
    manual_ack: bool = False,
    protocol: int = paho.MQTTv5,
    clean_session: bool | None = None,
    will_topic: str | None = None,
) -> paho.Client:
    """A paho client with the endpoint's credentials and TLS options applied
    (``clean_session`` is for MQTT 3.1.1 only: v5 sets clean start at connect), and
    "offline" retained at ``will_topic`` as its last will."""
    endpoint = settings.endpoint
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id if client_id is not None else settings.client_id,
        clean_session=clean_session,
        protocol=protocol,  # type: ignore[arg-type]
        manual_ack=manual_ack,
    )
    if endpoint.username is not None:
        password = endpoint.password.get_secret_value() if endpoint.password else None
        client.username_pw_set(endpoint.username, password)
    if endpoint.tls:
        tls = settings.tls
        client.tls_set(
            ca_certs=str(tls.ca_file) if tls.ca_file else None,
            certfile=str(tls.cert_file) if tls.cert_file else None,
            keyfile=str(tls.key_file) if tls.key_file else None,
            cert_reqs=ssl.CERT_NONE if tls.insecure else ssl.CERT_REQUIRED,
        )
        client.tls_insecure_set(tls.insecure)
    client.reconnect_delay_set(
        min_delay=max(1, round(settings.reconnect_min_s)),
        max_delay=max(1, round(settings.reconnect_max_s)),
    )
    if will_topic is not None:
        client.will_set(will_topic, OFFLINE, qos=1, retain=True)
    return client


class Inbox:
    """What both receivers share: the session they subscribe for, the inbox and its
    consumer's side (wait for messages, take them), and the connection counters."""

    _session_name = "MQTT connection"  # as the log names it

    def __init__(
        self,
        settings: MqttSettings,
        subscriptions: Sequence[str],
        *,
        status_topic: str,
        no_local: Sequence[str] = (),
    ) -> None:
        self.settings = settings
        self.subscriptions = list(subscriptions)
        # subscriptions that do not deliver this client's own publications (MQTT v5)
        self.no_local = frozenset(no_local)
        self.status_topic = status_topic
        self._inbox: collections.deque[Inbound] = collections.deque()
        self._wakeup = asyncio.Event()
        self._wakeup_pending = False
        # the consumer's loop, set when receiving starts: paho's thread wakes it
        self._loop: asyncio.AbstractEventLoop | None = None
        self.generation = 0  # which connection: acknowledgements are only valid on it
        self.connected = threading.Event()  # threading: read by /healthz and tests
        self.connects = 0
        self.disconnects = 0
        self.received = 0
        self.reads_paused = 0  # times the inbox was full (QoS 0 traffic) and reading waited
        self._paused_log = RateLimitedLog(log, 60.0)  # a sustained flood pauses every turn
        self._closing = False  # aclose was called: stop reading, reconnecting, waiting

    async def wait(self, timeout_s: float) -> None:
        """Return when messages are waiting, or after ``timeout_s``."""
        if self._inbox:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._wakeup.wait()

    def wake(self) -> None:
        """End a pending ``wait`` now (used at shutdown)."""
        self._wakeup.set()

    def drain(self, limit: int) -> list[Inbound]:
        self._wakeup.clear()
        self._wakeup_pending = False
        inbox = self._inbox
        count = min(len(inbox), limit)
        return [inbox.popleft() for _ in range(count)]

    @property
    def backlog(self) -> int:
        return len(self._inbox)

    def _full(self) -> bool:
        """Reading must wait for the consumer: the inbox holds receive-maximum messages.

        The broker sends no more unacknowledged QoS 1 messages than the receive-maximum,
        but QoS 0 ones it does not count: a device flooding at QoS 0 could otherwise fill
        memory while storage is behind. Not reading pushes back over TCP; the broker
        keeps what it queues for us (QoS 1 persisted), and drops QoS 0 past its limits.
        """
        return len(self._inbox) >= self.settings.receive_maximum and not self._closing

    def _note_paused(self) -> None:
        self.reads_paused += 1
        self._paused_log.warning(
            "inbox_full",
            "inbox full: reading from the broker paused",
            inbox=self.settings.receive_maximum,
        )

    def _session_up(self, reason_code: ReasonCode) -> bool:
        """At paho's connect: whether the broker let us in (a refusal is logged; paho
        tries again), counting a new connection when it did."""
        if reason_code.is_failure:
            log.error("%s refused: %s", self._session_name, reason_code)
            return False
        self.generation += 1
        self.connects += 1
        return True

    def _session_down(self, reason_code: ReasonCode) -> None:
        """At paho's disconnect: counted, and logged unless we closed it."""
        self.connected.clear()
        self.disconnects += 1
        if reason_code.is_failure:
            log.warning("%s lost, reconnecting: %s", self._session_name, reason_code)

    def _receive(self, message: paho.MQTTMessage) -> None:
        """Into the inbox, from paho's network thread (its on_message)."""
        # Must never raise: an exception here would end paho's network thread.
        if self._full():
            self._note_paused()
            while self._full():  # holding paho's thread: it reads no more meanwhile
                time.sleep(0.01)
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = message._topic.decode("utf-8", errors="replace")
        payload = message.payload
        if not isinstance(payload, bytes):
            payload = bytes(payload)
        self._inbox.append(
            Inbound(
                topic,
                payload,
                message.mid,
                message.qos,
                self.generation,
                time.time_ns() // 1_000_000,
                bool(message.retain),
            )
        )
        self.received += 1
        # One wake-up until the consumer drains: not a syscall and a loop turn per message.
        if not self._wakeup_pending and self._loop is not None:
            self._wakeup_pending = True
            with contextlib.suppress(RuntimeError):  # the loop is closing
                self._loop.call_soon_threadsafe(self._wakeup.set)


class MqttSource(Inbox):
    """Subscribes, collects inbound messages for an asyncio consumer, acknowledges on demand."""

    def __init__(
        self,
        settings: MqttSettings,
        subscriptions: Sequence[str],
        *,
        status_topic: str,
        no_local: Sequence[str] = (),
    ) -> None:
        super().__init__(settings, subscriptions, status_topic=status_topic, no_local=no_local)
        # Like a device: a retained status, "offline" left as the last will.
        self.client = make_client(settings, manual_ack=True, will_topic=status_topic)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_connect_fail = self._on_connect_fail

    # -- paho's network thread -------------------------------------------------------------

    def _on_connect_fail(self, client: paho.Client, userdata: object) -> None:
        # paho retries by itself and keeps the reason (refused, unreachable, a TLS
        # certificate it does not trust) to a debug message: say it where operators look.
        log.warning("MQTT connection to %s failed, retrying", self.settings.endpoint.host)

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
        client.subscribe(
            [
                (topic, SubscribeOptions(qos=1, noLocal=topic in self.no_local))
                for topic in self.subscriptions
            ]
        )
        self.connected.set()
        log.info(
            "MQTT connected",
            extra={"session_present": flags.session_present, "generation": self.generation},
        )

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        # Announced only now: whoever waits for "online" may publish and be heard.
        client.publish(self.status_topic, ONLINE, qos=1, retain=True)

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._session_down(reason_code)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._receive(message)

    # -- the asyncio side ------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        endpoint = self.settings.endpoint
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.settings.session_expiry_s
        props.ReceiveMaximum = self.settings.receive_maximum
        self.client.connect_async(
            endpoint.host,
            endpoint.port,
            keepalive=self.settings.keepalive_s,
            clean_start=False,
            properties=props,
        )
        self.client.loop_start()

    def ack(self, messages: Sequence[Inbound]) -> int:
        """Acknowledge stored messages; those of an earlier connection come again anyway."""
        generation = self.generation
        acked = 0
        for message in messages:
            if message.qos > 0 and message.generation == generation:
                self.client.ack(message.mid, message.qos)
                acked += 1
        return acked

    def publish(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=qos, retain=retain)

    async def aclose(self) -> None:
        """Say "offline" (retained), disconnect cleanly, stop paho's thread."""
        self._closing = True
        if self.connected.is_set():
            info = self.client.publish(self.status_topic, OFFLINE, qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(2.0)
        self.client.disconnect()
        self.client.loop_stop()
