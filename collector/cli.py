"""The ``smartunit`` command.

Exit codes: 0 success, 1 runtime failure, 2 invalid configuration or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from collector.config import Settings
from collector.configfile import CONFIG_ENV, load_settings
from collector.errors import (
    AlertStoreError,
    ConfigError,
    DamagedAlertStoreError,
    SmartUnitError,
)
from collector.registry import RegistryHolder
from collector.urls import redact_url

log = logging.getLogger("smartunit")

EXIT_RUNTIME = 1
EXIT_CONFIG = 2
DISTRIBUTION = "smartunit-monitor"
CONFIG_HELP = "TOML configuration file (default: $SMARTUNIT_CONFIG, else defaults and environment)"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "(not installed)"


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(getattr(args, "config", None))


def _registry(settings: Settings) -> RegistryHolder:
    return RegistryHolder.open(settings.registry)


def cmd_run(args: argparse.Namespace) -> int:
    from collector.app import Collector  # noqa: PLC0415
    from collector.configfile import redacted  # noqa: PLC0415
    from collector.logs import setup_logging  # noqa: PLC0415

    settings = _settings(args)
    holder = _registry(settings)
    setup_logging(settings.logging.level, settings.logging.format)
    log.info("starting collector", extra={"settings": redacted(settings)})

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, holder.request_reload)
        await Collector(settings, holder).run(stop)

    try:
        asyncio.run(main())
    except DamagedAlertStoreError as exc:
        # One line an operator can act on: what is wrong with which file, what to run.
        config = f" --config {args.config}" if args.config else ""
        log.critical(
            "%s; the collector will not run on it. Recover with `smartunit alerts-db recover%s` "
            "(keeps the damaged file, salvages what is readable); "
            "`smartunit alerts-db check%s` reports",
            exc,
            config,
            config,
            extra={"path": str(exc.path)},
        )
        return EXIT_RUNTIME
    except AlertStoreError as exc:
        log.critical("%s; the collector will not run on it", exc, extra={"path": str(exc.path)})
        return EXIT_RUNTIME
    return 0


def _alerts_database(args: argparse.Namespace) -> Path:
    settings = _settings(args)
    if not settings.alerts.store_url.startswith("sqlite:"):
        raise ConfigError(
            "alerts-db checks and recovers an SQLite alert store; a PostgreSQL one is "
            "checked with PostgreSQL's own tools (pg_amcheck) and its own backups"
        )
    return settings.alerts.sqlite_file(settings.data_dir)


def cmd_alerts_db_check(args: argparse.Namespace) -> int:
    from collector.alerts.repair import check  # noqa: PLC0415

    path = _alerts_database(args)
    if not path.exists():
        print(f"{path}: no alert database yet (the collector creates it)")
        return 0
    problems = check(path)
    if not problems:
        print(f"{path}: OK")
        return 0
    print(f"{path}: damaged, {len(problems)} problem(s):")
    for problem in problems:
        print(f"  {problem}")
    config = f" --config {args.config}" if args.config else ""
    print(f"recover with: smartunit alerts-db recover{config}")
    return EXIT_RUNTIME


def cmd_alerts_db_recover(args: argparse.Namespace) -> int:
    from collector.alerts.repair import check, recover  # noqa: PLC0415

    path = _alerts_database(args)
    if not path.exists():
        print(f"{path}: no alert database, nothing to recover")
        return 0
    if not check(path):  # the collector may be running on a sound one: never swap it
        print(f"{path}: OK, nothing to recover")
        return 0
    salvage = recover(path)
    print(f"{path}: {salvage.summary()}")
    return 0


GRAFANA_TOKEN_ENV = "SMARTUNIT_GRAFANA_TOKEN"  # noqa: S105 - a variable's name


def cmd_dashboards_push(args: argparse.Namespace) -> int:
    import os  # noqa: PLC0415

    from collector.grafana import InfluxSource, push_dashboards  # noqa: PLC0415

    token = args.token or os.environ.get(GRAFANA_TOKEN_ENV)
    if not token:
        raise ConfigError(f"a Grafana token is needed: --token or ${GRAFANA_TOKEN_ENV}")
    influx = None
    if args.influx_url:
        influx = InfluxSource(
            url=args.influx_url,
            database=args.influx_db,
            token=os.environ.get("SMARTUNIT_INFLUX_TOKEN"),
        )
    urls = push_dashboards(args.grafana_url, token, directory=args.dir, influx=influx)
    for url in urls:
        print(f"pushed {url}")
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from collector.rules import RuleBook, units_unknown_to  # noqa: PLC0415

    settings = load_settings(args.path)
    registry = _registry(settings).current
    book = RuleBook.load(settings.detection.rules)
    for warning in units_unknown_to(registry, settings.detection.rules):
        print(warning, file=sys.stderr)
    endpoint = settings.mqtt.endpoint
    print(f"{args.path}: OK")
    print(f"  mqtt:     {endpoint.host}:{endpoint.port}{' (TLS)' if endpoint.tls else ''}")
    print(f"  influx:   {settings.influx.url.split('@')[-1]} database {settings.influx.database!r}")
    print(
        f"  registry: {settings.registry.path or '(none)'}: "
        f"{len(registry.units)} units, {len(registry.devices)} devices"
    )
    print(
        f"  rules:    {len(book.rules)} from {len(settings.detection.rules)} file(s); "
        f"statistical chain: {settings.detection.statistical or 'none'}"
    )
    return 0


def _what_was_read(args: argparse.Namespace, settings: Settings) -> str:
    """Where the configuration and the registry came from, for a listing's first line."""
    config = getattr(args, "config", None) or os.environ.get(CONFIG_ENV)
    source = (
        f"configuration {config}"
        if config
        else f"no configuration file (give --config or set {CONFIG_ENV}): defaults and environment"
    )
    registry = settings.registry.path
    return f"{source}; registry: {registry or 'none, so no device is registered'}"


def cmd_devices(args: argparse.Namespace) -> int:
    settings = _settings(args)
    registry = _registry(settings).current
    print(f"# {_what_was_read(args, settings)}", file=sys.stderr)
    if not args.unregistered:
        print("device\tfamily\tunit\thierarchy")
        for device in sorted(registry.devices.values(), key=lambda d: d.id):
            unit = registry.units[device.unit]
            path = "/".join(unit.hierarchy.as_tags().values())
            print(f"{device.id}\t{device.family}\t{unit.id}\t{path}")
        return 0
    from collector.devices import unregistered_devices  # noqa: PLC0415

    influx = settings.influx
    print(f"# readings in {redact_url(influx.url)} database {influx.database!r}", file=sys.stderr)
    found = unregistered_devices(influx, registry)
    if not found:
        print("no unregistered devices have sent readings")
        return 0
    print("device\tfamily\tlast_seen\treadings")
    for item in found:
        print(f"{item.device}\t{item.family}\t{item.last_seen}\t{item.readings}")
    return 0


def cmd_broker_acl(args: argparse.Namespace) -> int:
    from fieldtools.brokerauth import broker_acl  # noqa: PLC0415

    registry = _registry(_settings(args)).current
    print(broker_acl(registry.units), end="")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from fieldtools.simulate import simulate_command  # noqa: PLC0415

    return simulate_command(args.tool_args, prog="smartunit simulate")


def cmd_backtest(args: argparse.Namespace) -> int:
    from collector.backtest import backtest  # noqa: PLC0415
    from collector.rules import RuleBook  # noqa: PLC0415
    from detectors.chain import Chain  # noqa: PLC0415
    from detectors.registry import UnknownDetectorError  # noqa: PLC0415

    try:
        chain = Chain.from_config(args.detector)
    except UnknownDetectorError as exc:
        raise ConfigError(str(exc)) from None
    rules = RuleBook.load(args.rules) if args.rules else None
    summary = backtest(
        args.input,
        args.out,
        chain,
        rules=rules,
        quantity=args.quantity,
        capacity=args.capacity,
        show_progress=not args.quiet,
    )
    for message in summary.failed:
        print(f"smartunit backtest: failed: {message}", file=sys.stderr)
    for problem in summary.problems:
        print(f"smartunit backtest: rejected: {problem}", file=sys.stderr)
    unjudged = ", ".join(f"{count} {note}" for note, count in sorted(summary.unjudged.items()))
    print(
        f"{summary.files} file(s), {summary.rows} rows, {summary.alerts} alert(s) -> {args.out}"
        + (f"; not judged: {unjudged}" if unjudged else "")
        + (f"; {len(summary.failed)} file(s) failed" if summary.failed else "")
    )
    return 0 if summary.ok else EXIT_RUNTIME


def cmd_demo(args: argparse.Namespace) -> int:
    from fieldtools.demo import run_demo  # noqa: PLC0415

    return run_demo(args)


def cmd_cluster_demo(args: argparse.Namespace) -> int:
    from fieldtools.clusterdemo import run_cluster_demo  # noqa: PLC0415

    return run_cluster_demo(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smartunit", description="SmartUnit Monitor: city-grid IoT monitoring."
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {_version()}", help="print the version"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the collector")
    run.add_argument("--config", type=Path, help=CONFIG_HELP)
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate a configuration and its registry")
    check.add_argument("path", type=Path, help="the TOML configuration file to check")
    check.set_defaults(func=cmd_check_config)

    devices = sub.add_parser("devices", help="list registered or unregistered devices")
    devices.add_argument("--config", type=Path, help=CONFIG_HELP)
    devices.add_argument(
        "--unregistered",
        action="store_true",
        help="devices that sent readings but are missing from the registry",
    )
    devices.set_defaults(func=cmd_devices)

    acl = sub.add_parser(
        "broker-acl",
        help="the Mosquitto ACL: config/mosquitto.acl plus a panel principal per registry unit",
    )
    acl.add_argument("--config", type=Path, help=CONFIG_HELP)
    acl.set_defaults(func=cmd_broker_acl)

    # The simulator defines its own arguments (smartunit simulate --help), so that building
    # this parser loads no field tool.
    simulate = sub.add_parser(
        "simulate",
        help="simulated field devices publishing over MQTT (see: smartunit simulate --help)",
        add_help=False,
    )
    simulate.set_defaults(func=cmd_simulate, takes_tool_args=True)

    backtest = sub.add_parser(
        "backtest", help="what would the detectors have raised on these CSV series?"
    )
    backtest.add_argument("input", type=Path, help="a timestamp,value CSV or a directory of them")
    backtest.add_argument("--out", type=Path, required=True, help="directory for the results")
    backtest.add_argument("--detector", default="auto", help="detector name (default: auto)")
    backtest.add_argument(
        "--rules",
        type=Path,
        action="append",
        help="rule file(s): apply the rules of each file's quantity (its name) instead",
    )
    backtest.add_argument("--quantity", help="with --rules: the quantity of every input file")
    backtest.add_argument("--capacity", type=float, help="with --rules: capacity for ratio rules")
    backtest.add_argument("--quiet", action="store_true", help="no progress bar")
    backtest.set_defaults(func=cmd_backtest)

    alerts_db = sub.add_parser("alerts-db", help="check or recover the alert database")
    alerts_db_sub = alerts_db.add_subparsers(dest="action", required=True)
    db_check = alerts_db_sub.add_parser(
        "check", help="SQLite's full integrity check; exit 1 if damaged"
    )
    db_check.add_argument("--config", type=Path, help=CONFIG_HELP)
    db_check.set_defaults(func=cmd_alerts_db_check)
    db_recover = alerts_db_sub.add_parser(
        "recover",
        help="keep the damaged file, salvage what is readable into a fresh database "
        "(with the collector stopped)",
    )
    db_recover.add_argument("--config", type=Path, help=CONFIG_HELP)
    db_recover.set_defaults(func=cmd_alerts_db_recover)

    dashboards = sub.add_parser("dashboards", help="Grafana dashboards")
    dashboards_sub = dashboards.add_subparsers(dest="action", required=True)
    push = dashboards_sub.add_parser(
        "push", help="install or update the dashboards through Grafana's HTTP API"
    )
    push.add_argument("--grafana-url", required=True, help="e.g. http://localhost:3000")
    push.add_argument(
        "--token",
        help=f"Grafana service-account token (better: ${GRAFANA_TOKEN_ENV}, kept out of ps)",
    )
    push.add_argument("--dir", type=Path, default=Path("dashboards"), help="the JSON files")
    push.add_argument("--influx-url", help="also create or update the InfluxDB datasource")
    push.add_argument(
        "--influx-db",
        default="smartunit",
        help="with --influx-url: its database (default smartunit)",
    )
    push.set_defaults(func=cmd_dashboards_push)

    demo = sub.add_parser("demo", help="broker, InfluxDB, collector and simulator, all local")
    demo.add_argument("--duration", type=float, default=0, help="stop after S seconds (0: Ctrl-C)")
    demo.add_argument("--workdir", type=Path, help="keep servers' data here (default: temporary)")
    demo.add_argument(
        "--devices",
        type=int,
        default=2,
        help="unregistered generated devices per family, besides the registry's",
    )
    demo.add_argument(
        "--config-dir",
        action="store_true",
        help="print the directory of the shipped sample configuration, registry, rule presets "
        "and Mosquitto files, and exit",
    )
    demo.set_defaults(func=cmd_demo)

    cluster = sub.add_parser(
        "cluster-demo",
        help="a 3-node NATS cluster, PostgreSQL, InfluxDB, 3 collectors and simulators, all local",
    )
    cluster.add_argument("--duration", type=float, default=0, help="stop after S seconds")
    cluster.add_argument("--workdir", type=Path, help="keep the data here (default: temporary)")
    cluster.add_argument(
        "--devices",
        type=int,
        default=2,
        help="unregistered generated devices per family, besides the registry's",
    )
    cluster.set_defaults(func=cmd_cluster_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, tool_args = parser.parse_known_args(argv)
    if tool_args and not getattr(args, "takes_tool_args", False):
        parser.error(f"unrecognized arguments: {' '.join(tool_args)}")
    args.tool_args = tool_args
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"smartunit: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except SmartUnitError as exc:
        print(f"smartunit: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
