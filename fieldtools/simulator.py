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
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import logging
import random
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiomqtt
import orjson

from collector.config import MqttEndpoint, parse_mqtt_url
from collector.configfile import load_settings
from collector.families import PLUGINS
from collector.registry import Registry

log = logging.getLogger(__name__)

CITY_TZ = ZoneInfo("Asia/Shanghai")
BACKLOG_LIMIT = 5000  # a device's flash buffer: the oldest readings go first when full
BACKLOG_CHUNK = 200

# Each family's profile (interval, anomalies, values) lives in its plug-in.
BASE_INTERVAL_S = {name: family.simulation.interval_s for name, family in PLUGINS.items()}
ANOMALY_KINDS = {name: family.simulation.anomalies for name, family in PLUGINS.items()}


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


class _GoOffline(Exception):
    """Raised inside a device's connection to drop it without a DISCONNECT."""


@dataclass
class SimulatorOptions:
    endpoint: MqttEndpoint
    duration_s: float = 0.0
    anomaly_every_s: float = 0.0
    anomaly_duration_s: tuple[float, float] = (60.0, 240.0)
    labels: Path | None = None
    backfill_hours: float = 0.0
    seed: int = 1


class Simulator:
    def __init__(self, devices: list[SimDevice], options: SimulatorOptions) -> None:
        self.devices = devices
        self.options = options
        self.rng = random.Random(options.seed)
        self.stop = asyncio.Event()
        self.published = 0
        self.labels_written = 0

    async def run(self) -> None:
        if self.options.backfill_hours > 0:
            await self._backfill()
        tasks = [asyncio.create_task(self._device_loop(d)) for d in self.devices]
        if self.options.anomaly_every_s > 0:
            tasks.append(asyncio.create_task(self._anomaly_loop()))
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
            step = max(device.interval_s, 60.0)
            t = start
            while t < now - device.interval_s:
                reading = device.sample(t)
                if reading is not None:
                    device.backlog.append(reading)
                t += step
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
            if device.anomaly is not None:
                self._write_label(device, device.anomaly)
            kind = self.rng.choice(ANOMALY_KINDS[device.family])
            device.anomaly = Anomaly(kind, now, now + self.rng.uniform(low, high))
            log.info("anomaly injected", extra={"device": device.id, "kind": kind})
            asyncio.get_running_loop().call_later(
                device.anomaly.end - now + 0.01, self._finish_label, device, device.anomaly
            )

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


def add_simulator_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="configuration (MQTT URL, registry)")
    parser.add_argument("--mqtt-url", help="overrides the configuration's mqtt.url")
    parser.add_argument("--registry", type=Path, help="simulate this registry's devices")
    parser.add_argument(
        "--generate", type=int, default=0, help="also simulate N unregistered devices per family"
    )
    parser.add_argument(
        "--interval-scale",
        type=float,
        default=1.0,
        help="multiply every device's reporting interval (default 1)",
    )
    parser.add_argument("--duration", type=float, default=0, help="stop after S seconds")
    parser.add_argument(
        "--anomaly-every", type=float, default=0, help="inject an anomaly every S seconds (0: none)"
    )
    parser.add_argument(
        "--anomaly-duration", type=float, nargs=2, default=(60.0, 240.0), metavar=("MIN_S", "MAX_S")
    )
    parser.add_argument("--labels", type=Path, help="append injected anomalies here (JSON lines)")
    parser.add_argument(
        "--backfill-hours",
        type=float,
        default=0,
        help="first send this much history as backlog arrays",
    )
    parser.add_argument("--seed", type=int, default=1)


def simulate_command(argv: Sequence[str], *, prog: str) -> int:
    """``smartunit simulate``: its arguments are parsed here, not by the command's parser."""
    parser = argparse.ArgumentParser(
        prog=prog, description="Simulated field devices publishing over MQTT."
    )
    add_simulator_arguments(parser)
    return run_simulator_cli(parser.parse_args(argv))


def run_simulator_cli(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    endpoint = parse_mqtt_url(args.mqtt_url) if args.mqtt_url else settings.mqtt.endpoint
    registry_path = args.registry or settings.registry.path
    registry = Registry.load(registry_path) if registry_path else Registry.empty()
    fleet = build_fleet(
        registry,
        generated_per_family=args.generate,
        interval_scale=args.interval_scale,
        seed=args.seed,
    )
    if not fleet:
        print("smartunit simulate: no devices: give --registry or --generate N")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s simulator: %(message)s")
    options = SimulatorOptions(
        endpoint=endpoint,
        duration_s=args.duration,
        anomaly_every_s=args.anomaly_every,
        anomaly_duration_s=(args.anomaly_duration[0], args.anomaly_duration[1]),
        labels=args.labels,
        backfill_hours=args.backfill_hours,
        seed=args.seed,
    )
    simulator = Simulator(fleet, options)

    async def main() -> None:
        import signal  # noqa: PLC0415

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, simulator.stop.set)
        await simulator.run()

    print(f"simulating {len(fleet)} devices against {endpoint.host}:{endpoint.port}", flush=True)
    asyncio.run(main())
    print(
        f"published {simulator.published} readings, {simulator.labels_written} labels", flush=True
    )
    return 0
