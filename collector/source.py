"""Where messages come from: the ``MessageSource`` contract and the one that is configured.

Three receivers keep this contract: ``collector.mqttbulk`` (the collector's own MQTT v5
client on the event loop, the default), ``collector.mqtt`` (paho-mqtt's network thread),
and ``collector.natssource`` (``transport = "nats"``: JetStream partitions of a NATS
cluster). The rest of the service sees only this Protocol: it drains messages in bursts,
acknowledges them in arrival order once their readings are stored, and publishes the
collector's own topics (quarantine, unit states, its status).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Protocol

from collector.config import MqttSettings, NatsSettings
from collector.mqtt import Inbound, MqttSource
from collector.mqttbulk import BulkMqttSource
from collector.protocol import DATA_SUBSCRIPTION, STATUS_SUBSCRIPTION, TOPIC_ROOT, topic_level
from collector.unitlink import UNIT_ACK_SUBSCRIPTION, UNIT_STATE_SUBSCRIPTION


class MessageSource(Protocol):
    """A bounded inbox of broker messages that are acknowledged only when stored."""

    connected: threading.Event  # read by /healthz and tests from other threads
    connects: int
    disconnects: int
    received: int

    @property
    def backlog(self) -> int:
        """Messages received and not drained yet."""
        ...

    def start(self) -> None:
        """Connect and subscribe, in the background; call from the running event loop."""

    async def wait(self, timeout_s: float) -> None:
        """Return once messages are waiting, ``wake`` was called, or the timeout passed."""

    def wake(self) -> None:
        """End a ``wait`` early (stopping)."""

    def drain(self, limit: int) -> list[Inbound]:
        """Take up to ``limit`` waiting messages, oldest first."""
        ...

    def ack(self, messages: Sequence[Inbound]) -> int:
        """Acknowledge stored messages to the broker; how many acknowledgements were sent."""
        ...

    def publish(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> None:
        """Publish from any thread; never blocks the caller on the network."""

    async def aclose(self) -> None:
        """Disconnect cleanly: unacknowledged messages stay with the broker."""


def open_source(settings: MqttSettings, nats: NatsSettings | None = None) -> MessageSource:
    """The configured receiver, subscribed to device data and status and to the units'
    acknowledgements and states; with ``nats`` (transport "nats") the data comes from
    the cluster's JetStream partitions instead (collector/natssource.py)."""
    if nats is not None:
        from collector.natssource import NatsSource  # noqa: PLC0415 - only for this transport

        return NatsSource(
            settings,
            nats,
            [STATUS_SUBSCRIPTION, UNIT_ACK_SUBSCRIPTION, UNIT_STATE_SUBSCRIPTION],
            status_topic=collector_status_topic(settings.client_id),
        )
    receiver = BulkMqttSource if settings.receiver == "bulk" else MqttSource
    return receiver(
        settings,
        [DATA_SUBSCRIPTION, STATUS_SUBSCRIPTION, UNIT_ACK_SUBSCRIPTION, UNIT_STATE_SUBSCRIPTION],
        status_topic=collector_status_topic(settings.client_id),
        # the collector's own retained states must not come back as someone else's
        no_local=[UNIT_STATE_SUBSCRIPTION],
    )


def collector_status_topic(client_id: str) -> str:
    """Retained ``{"state": "online"|"offline"}`` of a collector, online once subscribed."""
    return f"{TOPIC_ROOT}/_collector/{topic_level(client_id)}/status"
