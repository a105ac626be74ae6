"""A bulk MQTT v5 receiver on the collector's own event loop (``mqtt.receiver = "bulk"``).

paho-mqtt reads one packet per loop turn in its own thread, with several small reads
per packet: about 7-10k messages/s on these machines before any work is done. This
source reads whatever the socket holds (up to 256 KiB at a time), cuts every whole
packet out of the buffer, and acknowledges a stored batch with one write of many
PUBACKs. bench/rawreceive.py measured the same parsing at 343k messages/s.

Same contract as ``collector.mqtt.MqttSource``: a persistent session (``clean_start``
off, session expiry), receive-maximum flow control, manual acknowledgement after the
hand-off, the retained online/offline status with a last will, QoS 0/1 publishing for
the downlink and rejections, reconnection with capped exponential backoff, TLS and
username/password from the URL. Not supported, because the collector never asks for
them: QoS 2, topic aliases, enhanced authentication.

The packets it sends are built by collector/mqttwire.py; the session, flow control, the
inbox and acknowledgements are this module's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
import time
from collections.abc import Sequence

from collector.backoff import Backoff
from collector.config import MqttSettings
from collector.errors import MqttProtocolError
from collector.mqtt import OFFLINE, ONLINE, Inbound, Inbox
from collector.mqttwire import (
    CONNACK,
    DISCONNECT,
    DISCONNECT_PACKET,
    PINGREQ_PACKET,
    PUBACK,
    PUBLISH,
    SUBACK,
    connect_packet,
    puback_packets,
    publish_packet,
    read_packet,
    subscribe_packet,
)

log = logging.getLogger(__name__)

READ_SIZE = 256 * 1024
# Our own QoS 1 publishes (downlink, status, rejection copies) kept for resending while
# disconnected; beyond this the oldest are given up (the downlink is retained and
# republished on the next change; rejection copies are a courtesy).
MAX_OUTGOING = 10_000


class BulkMqttSource(Inbox):
    """Subscribes, collects inbound messages, acknowledges on demand; one event loop."""

    def __init__(
        self,
        settings: MqttSettings,
        subscriptions: Sequence[str],
        *,
        status_topic: str,
        no_local: Sequence[str] = (),
    ) -> None:
        super().__init__(settings, subscriptions, status_topic=status_topic, no_local=no_local)
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._next_id = 0
        # our QoS 1 publishes not yet acknowledged: sent again after a reconnect
        self._outgoing: dict[int, tuple[str, bytes, bool]] = {}
        self._acked_out = asyncio.Event()
        # Publishes handed over from other threads and not yet written: while there are
        # any, the loop's own publishes queue behind them, so the newest state of a topic
        # (a unit's siren) is the one written last, whoever published it.
        self._handed_over = 0
        self._handing_over = threading.Lock()

    # -- connection ------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name="mqtt")

    async def _run(self) -> None:
        backoff = Backoff(
            initial_s=self.settings.reconnect_min_s, max_s=self.settings.reconnect_max_s
        )
        attempt = 0  # reconnects since the last session that came up
        while not self._closing:
            try:
                await self._session()
                attempt = 0
            except (
                OSError,
                TimeoutError,
                MqttProtocolError,
                asyncio.IncompleteReadError,
                ssl.SSLError,
            ) as exc:
                if not self._closing:
                    log.warning("MQTT connection lost, reconnecting: %s", exc)
            finally:
                if self.connected.is_set():
                    self.disconnects += 1
                self.connected.clear()
                if self._writer is not None:
                    self._writer.close()
                    self._writer = None
            if self._closing:
                return
            attempt += 1
            await asyncio.sleep(backoff.delay(attempt))

    def _tls(self) -> ssl.SSLContext | None:
        if not self.settings.endpoint.tls:
            return None
        tls = self.settings.tls
        context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
        if tls.cert_file:
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
        if tls.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    async def _session(self) -> None:
        endpoint = self.settings.endpoint
        async with asyncio.timeout(10):
            reader, writer = await asyncio.open_connection(
                endpoint.host, endpoint.port, ssl=self._tls(), limit=READ_SIZE * 2
            )
        self._writer = writer
        writer.write(connect_packet(self.settings, will_topic=self.status_topic, will=OFFLINE))
        async with asyncio.timeout(10):
            first, body = await read_packet(reader)
        if first >> 4 != CONNACK or len(body) < 2:
            raise MqttProtocolError(f"expected CONNACK, got packet type {first >> 4}")
        session_present, reason = body[0] & 1, body[1]
        if reason >= 0x80:
            log.error("MQTT connection refused: reason code %d", reason)
            raise MqttProtocolError(f"CONNACK reason code {reason}")
        self.generation += 1
        self.connects += 1
        writer.write(subscribe_packet(self._packet_id(), self.subscriptions, self.no_local))
        for packet_id, (topic, payload, retain) in self._outgoing.items():  # resend, DUP
            writer.write(publish_packet(topic, payload, 1, retain, packet_id, dup=True))
        log.info(
            "MQTT connected",
            extra={"session_present": bool(session_present), "generation": self.generation},
        )
        pinger = asyncio.create_task(self._keepalive(writer))
        try:
            await self._read_loop(reader)
        finally:
            pinger.cancel()

    async def _keepalive(self, writer: asyncio.StreamWriter) -> None:
        period = max(self.settings.keepalive_s / 2, 1)
        while True:
            await asyncio.sleep(period)
            writer.write(PINGREQ_PACKET)  # PINGREQ; a broker that stops answering times us out

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        buffer = bytearray()
        deadline = self.settings.keepalive_s * 1.5
        while True:
            if self._full():
                self._note_paused()
                while self._full():
                    await asyncio.sleep(0.01)
            async with asyncio.timeout(deadline):
                chunk = await reader.read(READ_SIZE)
            if not chunk:
                raise MqttProtocolError("the broker closed the connection")
            buffer += chunk
            consumed = self._parse(buffer)
            del buffer[:consumed]

    def _parse(self, buffer: bytearray) -> int:
        """Handle every whole packet in ``buffer``; returns how many bytes were used."""
        view = memoryview(buffer)
        position, end = 0, len(buffer)
        now_ms = time.time_ns() // 1_000_000
        generation = self.generation
        arrive = self._inbox.append
        arrived = 0
        try:
            while position + 2 <= end:
                first = buffer[position]
                length = buffer[position + 1]
                cursor = position + 2
                if length & 0x80:  # a remaining length of more than one byte
                    length, shift, cursor = 0, 0, position + 1
                    complete_header = False
                    while cursor < end:
                        byte = buffer[cursor]
                        length |= (byte & 0x7F) << shift
                        cursor += 1
                        if not byte & 0x80:
                            complete_header = True
                            break
                        shift += 7
                    if not complete_header:
                        break
                packet_end = cursor + length
                if packet_end > end:
                    break
                kind = first >> 4
                if kind == PUBLISH:
                    qos = (first >> 1) & 3
                    topic_end = cursor + 2 + ((buffer[cursor] << 8) | buffer[cursor + 1])
                    topic = str(view[cursor + 2 : topic_end], "utf-8", "replace")
                    body = topic_end
                    packet_id = 0
                    if qos:
                        packet_id = (buffer[body] << 8) | buffer[body + 1]
                        body += 2
                    if buffer[body]:  # v5 properties: a varint length, then skipped
                        properties, shift = 0, 0
                        while True:
                            byte = buffer[body]
                            properties |= (byte & 0x7F) << shift
                            body += 1
                            if not byte & 0x80:
                                break
                            shift += 7
                        body += properties
                    else:  # none, as nearly always
                        body += 1
                    # tuple.__new__, not Inbound(...): a NamedTuple's own __new__ is
                    # Python code, and this runs for every message received
                    arrive(
                        tuple.__new__(
                            Inbound,
                            (
                                topic,
                                bytes(view[body:packet_end]),
                                packet_id,
                                qos,
                                generation,
                                now_ms,
                                bool(first & 1),  # RETAIN, in the fixed header
                            ),
                        )
                    )
                    arrived += 1
                elif kind == PUBACK:
                    packet_id = (view[cursor] << 8) | view[cursor + 1]
                    self._outgoing.pop(packet_id, None)
                    self._acked_out.set()
                elif kind == SUBACK:
                    self.connected.set()
                    # Announced only now: whoever waits for "online" may publish and be heard.
                    self.publish(self.status_topic, ONLINE, qos=1, retain=True)
                elif kind == DISCONNECT:
                    reason = view[cursor] if length else 0
                    raise MqttProtocolError(f"the broker disconnected us: reason code {reason}")
                position = packet_end
        finally:
            view.release()
        if arrived:
            self.received += arrived
            self._wakeup.set()
        return position

    # -- the collector's side --------------------------------------------------------------

    def ack(self, messages: Sequence[Inbound]) -> int:
        """One write of PUBACKs for stored messages of the current connection."""
        writer, generation = self._writer, self.generation
        if writer is None:
            return 0
        # unpacked, not read by name: this runs for every message stored
        acks = [mid for _, _, mid, qos, got_on, _, _ in messages if qos and got_on == generation]
        if acks:
            writer.write(puback_packets(acks))
        return len(acks)

    def _packet_id(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    def publish(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> None:
        """Safe from any thread (alert events come from the HTTP API's): the stream and the
        packet ids belong to the event loop, so other threads hand their publishes over."""
        loop = self._loop
        if loop is not None and (self._handed_over or not _running_on(loop)):
            with self._handing_over:
                self._handed_over += 1
            loop.call_soon_threadsafe(self._publish_handed_over, topic, payload, qos, retain)
            return
        self._publish_now(topic, payload, qos, retain)

    def _publish_handed_over(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        with self._handing_over:
            self._handed_over -= 1
        self._publish_now(topic, payload, qos, retain)

    def _publish_now(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        packet_id = self._packet_id() if qos else 0
        if qos:
            if len(self._outgoing) >= MAX_OUTGOING:  # disconnected for long: oldest go first
                self._outgoing.pop(next(iter(self._outgoing)))
            self._outgoing[packet_id] = (topic, payload, retain)
        if self._writer is not None:
            self._writer.write(publish_packet(topic, payload, qos, retain, packet_id, dup=False))

    async def aclose(self) -> None:
        """Say "offline" (retained), disconnect cleanly, stop reconnecting."""
        self._closing = True
        writer = self._writer
        if writer is not None and self.connected.is_set():
            self._publish_now(self.status_topic, OFFLINE, 1, True)  # before the DISCONNECT
            deadline = time.monotonic() + 2
            while self._outgoing and time.monotonic() < deadline:
                self._acked_out.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.2):
                        await self._acked_out.wait()
            with contextlib.suppress(OSError):
                writer.write(DISCONNECT_PACKET)  # the will is not sent
                await writer.drain()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.connected.clear()


def _running_on(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
