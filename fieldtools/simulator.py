"""Simulated field devices that behave like real firmware.

Each device keeps its own MQTT connection (so it can have a last will), publishes a
retained ``online`` status on connect, sends readings at QoS 1 with a per-device ``seq``,
buffers readings while disconnected and sends them as a backlog array after it
reconnects. Values follow realistic shapes: daily crowd and traffic curves at
checkpoints and sites, office-hours parking occupancy, noisy process values in chemical
parks (local time of day in the city's time zone).

On request, anomalies are injected and written with their times to a label file (one
JSON object per line): ``crowd_surge``, ``gas_leak`` (a ramp of % LEL), ``smoke`` (a
detector in alarm, its temperature rising), ``pressure_drop`` (a burst fire-water main),
``stuck_sensor``, ``camera_dropout`` (connected but silent) and ``device_offline`` (the
connection drops without a DISCONNECT, so the broker publishes the last will). Each
family's values and anomaly kinds are its plug-in's profile (collector/families/).
Anomalies come at random, or at set times on named devices (a demo's script). A device
can also be made to send, now and then, a message the collector must reject, as faulty
firmware does. Each injection is logged with the device and the kind.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import logging
import random
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiomqtt
import orjson

from collector.config import MqttEndpoint
from collector.families import PLUGINS
from collector.registry import Registry

log = logging.getLogger(__name__)

CITY_TZ = ZoneInfo("Asia/Shanghai")
BACKLOG_LIMIT = 5000  # a device's flash buffer: the oldest readings go first when full
BACKLOG_CHUNK = 200

# Each family's profile (interval, anomalies, values) lives in its plug-in.
BASE_INTERVAL_S = {name: family.simulation.interval_s for name, family in PLUGINS.items()}
ANOMALY_KINDS = {name: family.simulation.anomalies for name, family in PLUGINS.items()}

# Faults of real firmware, each with the rejection reason the collector gives it: a
# message cut short, a clock a day ahead, a payload claiming another device's id.
FAULTY_MESSAGES = {
    "truncated_json": "bad_json",
    "clock_a_day_ahead": "ts_in_future",
    "foreign_device_id": "device_mismatch",
}
# Log lines that tell what was injected start with this, for whoever follows the log.
INJECTED = "injected"


@dataclass
class Anomaly:
    kind: str
    start: float
    end: float
    labelled: bool = False

    def active(self, t: float) -> bool:
        return self.start <= t < self.end

    def progress(self, t: float) -> float:
        return min(max((t - self.start) / max(self.end - self.start, 1e-9), 0.0), 1.0)


@dataclass
class SimDevice:
    id: str
    family: str
    unit: str
    capacity: int
    send_capacity: bool
    interval_s: float
    rng: random.Random
    seq: int = 0
    backlog: collections.deque[dict[str, Any]] = field(
        default_factory=lambda: collections.deque(maxlen=BACKLOG_LIMIT)
    )
    anomaly: Anomaly | None = None
    stuck: dict[str, Any] | None = None
    memory: dict[str, float] = field(default_factory=dict)
    fault_due: str | None = None  # a faulty message to send with the next reading

    @property
    def data_topic(self) -> str:
        return f"smartunit/v1/{self.family}/{self.id}/data"

    @property
    def status_topic(self) -> str:
        return f"smartunit/v1/{self.family}/{self.id}/status"

    def anomaly_progress(self, kind: str, t: float) -> float | None:
        anomaly = self.anomaly
        if anomaly is None or anomaly.kind != kind or not anomaly.active(t):
            return None
        return anomaly.progress(t)

    def _values(self, t: float) -> dict[str, Any]:
        local = datetime.fromtimestamp(t, CITY_TZ)
        return PLUGINS[self.family].simulation.values(self, t, local.hour + local.minute / 60)

    def sample(self, t: float) -> dict[str, Any] | None:
        """The reading this device takes at time t, or None while its camera is dark."""
        anomaly = self.anomaly if self.anomaly and self.anomaly.active(t) else None
        if anomaly and anomaly.kind == "camera_dropout":
            return None
        if anomaly and anomaly.kind == "stuck_sensor":
            if self.stuck is None:
                self.stuck = self._values(t)
            values = self.stuck
        else:
            self.stuck = None
            values = self._values(t)
        self.seq += 1
        return {"ts": round(t, 3), "seq": self.seq, **values}

    def history(self, start: float, end: float) -> list[dict[str, Any]]:
        """The readings taken from ``start`` until just before ``end``, one a minute at
        most (what a device's flash buffer keeps)."""
        step = max(self.interval_s, 60.0)
        readings = []
        t = start
        while t < end - self.interval_s:
            reading = self.sample(t)
            if reading is not None:
                readings.append(reading)
            t += step
        return readings

    def faulty_message(self, fault: str, t: float) -> bytes:
        """A payload with one of ``FAULTY_MESSAGES``' faults; it takes no ``seq``, as the
        collector stores none of it."""
        values = self._values(t)
        if fault == "clock_a_day_ahead":
            return orjson.dumps({"ts": round(t + 86_400, 3), **values})
        if fault == "foreign_device_id":
            return orjson.dumps({"ts": round(t, 3), "device": f"{self.id}-x", **values})
        whole = orjson.dumps({"ts": round(t, 3), **values})
        return whole[: len(whole) // 2]


class _GoOffline(Exception):
    """Raised inside a device's connection to drop it without a DISCONNECT."""


@dataclass(frozen=True)
class ScheduledAnomaly:
    """An anomaly of ``kind`` on ``device``, ``after_s`` seconds after the devices start
    reporting live, lasting ``duration_s``."""

    after_s: float
    device: str
    kind: str
    duration_s: float

    @classmethod
    def parse(cls, text: str) -> ScheduledAnomaly:
        """``AFTER_S:DEVICE:KIND:DURATION_S`` (a device id may itself hold colons)."""
        after, _, rest = text.partition(":")
        parts = rest.rsplit(":", 2)
        try:
            if len(parts) != 3 or not parts[0]:
                raise ValueError
            scheduled = cls(float(after), parts[0], parts[1], float(parts[2]))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r}: expected AFTER_S:DEVICE:KIND:DURATION_S, e.g. 5:chem-01:gas_leak:120"
            ) from None
        if scheduled.after_s < 0 or scheduled.duration_s <= 0:
            raise argparse.ArgumentTypeError(f"{text!r}: AFTER_S >= 0 and DURATION_S > 0")
        return scheduled


@dataclass
class SimulatorOptions:
    endpoint: MqttEndpoint
    duration_s: float = 0.0
    anomaly_every_s: float = 0.0
    anomaly_duration_s: tuple[float, float] = (60.0, 240.0)
    labels: Path | None = None
    backfill_hours: float = 0.0
    seed: int = 1
    schedule: tuple[ScheduledAnomaly, ...] = ()
    faulty_message_every_s: float = 0.0


class Simulator:
    def __init__(self, devices: list[SimDevice], options: SimulatorOptions) -> None:
        self.devices = devices
        self.options = options
        self.rng = random.Random(options.seed)
        self.stop = asyncio.Event()
        self.published = 0
        self.labels_written = 0

    async def run(self) -> None:
        """Raises ``aiomqtt.MqttError`` when the broker does not let a first client in."""
        async with self._client(self.devices[0], will=False):
            pass  # a wrong address or password fails here, not in devices retrying forever
        if self.options.backfill_hours > 0:
            await self._backfill()
        tasks = [asyncio.create_task(self._device_loop(d)) for d in self.devices]
        if self.options.anomaly_every_s > 0:
            tasks.append(asyncio.create_task(self._anomaly_loop()))
        by_id = {device.id: device for device in self.devices}
        tasks += [
            asyncio.create_task(self._scheduled(by_id[s.device], s)) for s in self.options.schedule
        ]
        if self.options.faulty_message_every_s > 0:
            tasks.append(asyncio.create_task(self._fault_loop()))
        if self.options.duration_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.options.duration_s)
            self.stop.set()
        else:
            await self.stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        now = time.time()
        for device in self.devices:  # what is still going on is labelled as ending now
            anomaly = device.anomaly
            if anomaly is not None and anomaly.start <= now:
                anomaly.end = min(anomaly.end, now)
                self._write_label(device, anomaly)

    def _client(self, device: SimDevice, *, will: bool = True) -> aiomqtt.Client:
        endpoint = self.options.endpoint
        return aiomqtt.Client(
            endpoint.host,
            endpoint.port,
            identifier=f"sim-{device.id}",
            username=endpoint.username,
            password=endpoint.password.get_secret_value() if endpoint.password else None,
            will=aiomqtt.Will(device.status_topic, b'{"state":"offline"}', qos=1, retain=True)
            if will
            else None,
            keepalive=10,
            timeout=10,
        )

    async def _backfill(self) -> None:
        """History for the last hours, sent as backlog arrays, like devices after an outage."""
        now = time.time()
        start = now - self.options.backfill_hours * 3600
        for device in self.devices:
            device.backlog.extend(device.history(start, now))
        async with self._client(self.devices[0], will=False) as client:
            for device in self.devices:
                await self._flush_backlog(client, device)

    async def _flush_backlog(self, client: aiomqtt.Client, device: SimDevice) -> None:
        while device.backlog:
            chunk = [device.backlog[i] for i in range(min(BACKLOG_CHUNK, len(device.backlog)))]
            await client.publish(device.data_topic, orjson.dumps(chunk), qos=1)
            for _ in chunk:
                device.backlog.popleft()
            self.published += len(chunk)

    async def _device_loop(self, device: SimDevice) -> None:
        # Devices do not all start on the same tick.
        await asyncio.sleep(self.rng.uniform(0, min(device.interval_s, 2.0)))
        while not self.stop.is_set():
            try:
                async with self._client(device) as client:
                    await client.publish(
                        device.status_topic, b'{"state":"online"}', qos=1, retain=True
                    )
                    await self._flush_backlog(client, device)
                    await self._connected(client, device)
            except _GoOffline:
                pass
            except aiomqtt.MqttError as exc:
                log.debug("device %s lost its connection: %s", device.id, exc)
            await self._offline(device)

    async def _connected(self, client: aiomqtt.Client, device: SimDevice) -> None:
        while not self.stop.is_set():
            t = time.time()
            if (
                device.anomaly
                and device.anomaly.kind == "device_offline"
                and device.anomaly.active(t)
            ):
                sock = client._client.socket()  # a crash, not a goodbye: no DISCONNECT
                if isinstance(sock, socket.socket):
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                raise _GoOffline
            if device.fault_due is not None:
                fault, device.fault_due = device.fault_due, None
                payload = device.faulty_message(fault, t)
                await client.publish(device.data_topic, payload, qos=1)
                log.info(
                    "%s a faulty message on %s: %s (the collector rejects it as %s)",
                    INJECTED, device.id, fault, FAULTY_MESSAGES[fault],
                )  # fmt: skip
            reading = device.sample(t)
            if reading is not None:
                try:
                    await client.publish(device.data_topic, orjson.dumps(reading), qos=1)
                    self.published += 1
                except aiomqtt.MqttError:
                    device.backlog.append(reading)  # keep it for after the reconnect
                    raise
            await asyncio.sleep(device.interval_s)

    async def _offline(self, device: SimDevice) -> None:
        """Keep measuring into the backlog until it is time to reconnect."""
        reconnect_at = time.time() + 2.0
        if device.anomaly and device.anomaly.kind == "device_offline":
            reconnect_at = max(reconnect_at, device.anomaly.end)
        while not self.stop.is_set() and time.time() < reconnect_at:
            reading = device.sample(time.time())
            if reading is not None:
                device.backlog.append(reading)
            await asyncio.sleep(min(device.interval_s, max(reconnect_at - time.time(), 0.05)))

    async def _anomaly_loop(self) -> None:
        low, high = self.options.anomaly_duration_s
        while not self.stop.is_set():
            await asyncio.sleep(self.options.anomaly_every_s)
            now = time.time()
            idle = [d for d in self.devices if not (d.anomaly and d.anomaly.active(now))]
            if not idle:
                continue
            device = self.rng.choice(idle)
            kind = self.rng.choice(ANOMALY_KINDS[device.family])
            self._inject(device, kind, self.rng.uniform(low, high))

    async def _scheduled(self, device: SimDevice, scheduled: ScheduledAnomaly) -> None:
        await asyncio.sleep(scheduled.after_s)
        self._inject(device, scheduled.kind, scheduled.duration_s)

    def _inject(self, device: SimDevice, kind: str, duration_s: float) -> None:
        now = time.time()
        previous = device.anomaly
        if previous is not None:  # labelled as ending where the new one begins
            previous.end = min(previous.end, now)
            self._write_label(device, previous)
        device.anomaly = Anomaly(kind, now, now + duration_s)
        log.info(
            "%s an anomaly on %s (unit %s): %s for %.0f s",
            INJECTED, device.id, device.unit, kind, duration_s,
        )  # fmt: skip
        asyncio.get_running_loop().call_later(
            duration_s + 0.01, self._finish_label, device, device.anomaly
        )

    async def _fault_loop(self) -> None:
        faults = itertools.cycle(FAULTY_MESSAGES)
        while not self.stop.is_set():
            await asyncio.sleep(self.options.faulty_message_every_s)
            self.rng.choice(self.devices).fault_due = next(faults)

    def _finish_label(self, device: SimDevice, anomaly: Anomaly) -> None:
        self._write_label(device, anomaly)
        if device.anomaly is anomaly:
            device.anomaly = None

    def _write_label(self, device: SimDevice, anomaly: Anomaly) -> None:
        if anomaly.labelled or self.options.labels is None:
            return
        anomaly.labelled = True
        label = {
            "kind": anomaly.kind,
            "device": device.id,
            "family": device.family,
            "unit": device.unit,
            "start": round(anomaly.start, 3),
            "end": round(anomaly.end, 3),
            "start_iso": datetime.fromtimestamp(anomaly.start, CITY_TZ).isoformat(),
            "end_iso": datetime.fromtimestamp(anomaly.end, CITY_TZ).isoformat(),
        }
        with self.options.labels.open("ab") as out:
            out.write(orjson.dumps(label) + b"\n")
        self.labels_written += 1


def build_fleet(
    registry: Registry,
    *,
    generated_per_family: int = 0,
    interval_scale: float = 1.0,
    seed: int = 1,
) -> list[SimDevice]:
    """The registry's devices plus ``generated_per_family`` unregistered ones per family."""
    rng = random.Random(seed)
    fleet: list[SimDevice] = []
    for device in sorted(registry.devices.values(), key=lambda d: d.id):
        unit = registry.units[device.unit]
        capacity = PLUGINS[device.family].simulation.capacity(
            device.capacity, unit.capacity, unit.safe_capacity
        )
        fleet.append(
            SimDevice(
                id=device.id,
                family=device.family,
                unit=unit.id,
                capacity=capacity,
                send_capacity=not (device.capacity or unit.capacity),
                interval_s=BASE_INTERVAL_S[device.family] * interval_scale,
                rng=random.Random(rng.random()),
            )
        )
    for family, plugin in PLUGINS.items():
        for index in range(1, generated_per_family + 1):
            fleet.append(
                SimDevice(
                    id=f"{plugin.simulation.device_prefix}-{index:04d}",
                    family=family,
                    unit="_unregistered",
                    capacity=plugin.simulation.generated_capacity,
                    send_capacity=True,
                    interval_s=BASE_INTERVAL_S[family] * interval_scale,
                    rng=random.Random(rng.random()),
                )
            )
    return fleet
