"""``smartunit simulate``: the simulator's command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import aiomqtt

from collector.config import parse_mqtt_url
from collector.configfile import load_settings
from collector.registry import Registry
from fieldtools.simulator import (
    ANOMALY_KINDS,
    ScheduledAnomaly,
    SimDevice,
    Simulator,
    SimulatorOptions,
    build_fleet,
)

EXIT_RUNTIME = 1
EXIT_USAGE = 2


def simulate_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Simulated field devices publishing over MQTT."
    )
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
        "--anomaly-duration",
        type=float,
        nargs=2,
        default=(60.0, 240.0),
        metavar=("MIN_S", "MAX_S"),
        help="each random anomaly lasts between MIN_S and MAX_S seconds (default 60 240)",
    )
    parser.add_argument(
        "--schedule",
        type=ScheduledAnomaly.parse,
        action="append",
        default=[],
        metavar="AFTER_S:DEVICE:KIND:DURATION_S",
        help="inject KIND on DEVICE AFTER_S seconds after the devices start reporting live, "
        "for DURATION_S (repeatable)",
    )
    parser.add_argument(
        "--faulty-message-every",
        type=float,
        default=0,
        metavar="S",
        help="every S seconds a device sends a message the collector must reject "
        "(truncated JSON, a clock a day ahead, another device's id; 0: none)",
    )
    parser.add_argument("--labels", type=Path, help="append injected anomalies here (JSON lines)")
    parser.add_argument(
        "--backfill-hours",
        type=float,
        default=0,
        help="first send this much history as backlog arrays",
    )
    parser.add_argument(
        "--seed", type=int, default=1, help="random seed: the same seed, the same run"
    )
    parser.add_argument(
        "--shard",
        type=parse_shard,
        default=(0, 1),
        metavar="K/N",
        help="simulate only every N-th device of the fleet, from the K-th (0-based): N "
        "simulators, each on another gateway, share one fleet (scheduled anomalies of other "
        "shards' devices are theirs)",
    )
    return parser


def parse_shard(text: str) -> tuple[int, int]:
    index, slash, count = text.partition("/")
    try:
        shard = (int(index), int(count))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not K/N") from None
    if not slash or shard[1] < 1 or not 0 <= shard[0] < shard[1]:
        raise argparse.ArgumentTypeError(f"{text!r}: need 0 <= K < N")
    return shard


def simulate_command(argv: Sequence[str], *, prog: str) -> int:
    """``smartunit simulate``: its arguments are parsed here, not by the command's parser."""
    return run_simulator_cli(simulate_parser(prog).parse_args(argv))


def schedule_problems(fleet: list[SimDevice], schedule: Sequence[ScheduledAnomaly]) -> list[str]:
    """What is wrong with each scheduled anomaly: a device not simulated, a kind its family
    cannot show."""
    by_id = {device.id: device for device in fleet}
    problems = []
    for scheduled in schedule:
        device = by_id.get(scheduled.device)
        if device is None:
            problems.append(f"--schedule: no simulated device {scheduled.device!r}")
        elif scheduled.kind not in ANOMALY_KINDS[device.family]:
            kinds = ", ".join(ANOMALY_KINDS[device.family])
            problems.append(
                f"--schedule: a {device.family} device cannot show {scheduled.kind!r} "
                f"(it can: {kinds})"
            )
    return problems


def one_shard(
    fleet: list[SimDevice], schedule: Sequence[ScheduledAnomaly], shard: tuple[int, int]
) -> tuple[list[SimDevice], tuple[ScheduledAnomaly, ...]]:
    """Shard K of N: every N-th device from the K-th, and the scheduled anomalies of those
    devices. The N shards of one fleet hold each device and each anomaly once."""
    index, count = shard
    mine = fleet[index::count]
    ids = {device.id for device in mine}
    return mine, tuple(scheduled for scheduled in schedule if scheduled.device in ids)


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
        print("smartunit simulate: no devices: give --registry or --generate N", file=sys.stderr)
        return EXIT_USAGE
    problems = schedule_problems(fleet, args.schedule)
    fleet, schedule = one_shard(fleet, args.schedule, args.shard)
    if not fleet:
        print(f"smartunit simulate: shard {args.shard} has no device", file=sys.stderr)
        return EXIT_USAGE
    for problem in problems:
        print(f"smartunit simulate: {problem}", file=sys.stderr)
    if problems:
        return EXIT_USAGE
    logging.basicConfig(level=logging.INFO, format="%(asctime)s simulator: %(message)s")
    options = SimulatorOptions(
        endpoint=endpoint,
        duration_s=args.duration,
        anomaly_every_s=args.anomaly_every,
        anomaly_duration_s=(args.anomaly_duration[0], args.anomaly_duration[1]),
        labels=args.labels,
        backfill_hours=args.backfill_hours,
        seed=args.seed,
        schedule=schedule,
        faulty_message_every_s=args.faulty_message_every,
    )
    simulator = Simulator(fleet, options)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, simulator.stop.set)
        await simulator.run()

    print(f"simulating {len(fleet)} devices against {endpoint.host}:{endpoint.port}", flush=True)
    try:
        asyncio.run(main())
    except aiomqtt.MqttError as exc:
        print(
            f"smartunit simulate: cannot connect to the MQTT broker at "
            f"{endpoint.host}:{endpoint.port}: {exc}",
            file=sys.stderr,
        )
        return EXIT_RUNTIME
    print(
        f"published {simulator.published} readings, {simulator.labels_written} labels", flush=True
    )
    return 0
