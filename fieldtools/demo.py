"""``smartunit demo``: the whole service on this machine, with simulated devices.

Starts Mosquitto and InfluxDB on free loopback ports in a temporary directory (or
``--workdir``, kept), then the collector and the simulator as their own processes, prints
where to look, how many readings have arrived and every anomaly it injects, and on Ctrl-C
(or after ``--duration``) stops everything in order. Every child dies with the demo even
if the demo itself is killed.

A fresh demo's InfluxDB first gets a day of the simulated devices' history, as a
deployment's holds when a collector starts: the collector's warm start learns from it
(the statistical detectors judge a series once they have seen a day of it, or 400
readings), so they judge the live readings from the first one. Within the first minute
a scripted opening shows the alert loop on registered units; random anomalies and, now
and then, a faulty message follow.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho

from collector.config import InfluxSettings, MqttSettings, MqttTls
from collector.configfile import load_settings
from collector.errors import ServiceStartError, SmartUnitError
from collector.families import PLUGINS
from collector.influx import query_sync
from collector.mqtt import make_client
from collector.registry import FAMILIES, Registry
from collector.source import collector_status_topic
from fieldtools.brokerauth import (
    COLLECTOR_USER,
    OBSERVER_USER,
    SIMULATOR_USER,
    broker_acl,
    panel_user,
    write_credentials,
    write_password_file,
)
from fieldtools.history import store_history
from fieldtools.localservices import (
    BrokerAuth,
    InfluxDB,
    Mosquitto,
    free_port,
    spawn,
    stop_process,
)
from fieldtools.shipped import SAMPLE_CONFIG, shipped_config_dir
from fieldtools.simulator import INJECTED, ScheduledAnomaly, build_fleet

DEMO_DB = "smartunit"
HISTORY_HOURS = 24.0  # what the shipped configuration's warm start reads
ANOMALY_EVERY_S = 45.0
FAULTY_MESSAGE_EVERY_S = 20.0
# The first minute, on the shipped registry's units (seconds after the devices go live):
# a gas leak at a chemical plant with a contact and a runbook, rising through the rate
# rule's yellow to the GB/T 50493 levels' orange and red; then a smoke alarm, red at once.
OPENING = (
    ScheduledAnomaly(after_s=3.0, device="chem-xh-gas-01", kind="gas_leak", duration_s=150.0),
    ScheduledAnomaly(after_s=15.0, device="fire-hg-smoke-01", kind="smoke", duration_s=90.0),
)


SMARTUNIT = [sys.executable, "-m", "collector.cli"]
ANOMALIES = (
    "  anomalies     first "
    + "; ".join(f"{s.kind} on {s.device} at +{s.after_s:.0f} s" for s in OPENING)
    + f"; then one every {ANOMALY_EVERY_S:.0f} s, and a faulty\n"
    f"                message every {FAULTY_MESSAGE_EVERY_S:.0f} s; "
    "each printed below when injected"
)


@dataclass(frozen=True, kw_only=True)
class DemoSession:
    """What a demo started: its directory, its child processes (stopped newest first) and
    its services (stopped after the children, in reverse order of registering)."""

    workdir: Path
    children: dict[str, subprocess.Popen[bytes]]
    services: contextlib.ExitStack


def run_demo_session(
    command: str, workdir: Path | None, demo: Callable[[DemoSession], None]
) -> int:
    """Run ``demo`` until it returns, Ctrl-C or a SmartUnitError, then stop everything it
    started; a directory made for the run goes with it, a given one stays."""
    temporary = workdir is None
    directory = (
        Path(tempfile.mkdtemp(prefix=f"smartunit-{command}-")) if workdir is None else workdir
    )
    directory.mkdir(parents=True, exist_ok=True)
    session = DemoSession(workdir=directory, children={}, services=contextlib.ExitStack())
    try:
        demo(session)
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
    except SmartUnitError as exc:
        print(f"smartunit {command}: {exc}", file=sys.stderr)
        return 1
    finally:
        for child in reversed(session.children.values()):
            stop_process(child)
        session.services.close()
        if temporary:
            shutil.rmtree(directory, ignore_errors=True)
    kept = "" if temporary else f"; its data stays in {directory}"
    print(f"{command.replace('-', ' ')} stopped; no process left running{kept}", flush=True)
    return 0


def shipped_registry(config: Path) -> Registry:
    registry_path = load_settings(config).registry.path
    return Registry.load(registry_path) if registry_path else Registry.empty()


def store_demo_history(
    influx: InfluxSettings, registry: Registry, devices: int, workdir: Path, *, readers: str
) -> int:
    """The simulated fleet's last hours in a fresh InfluxDB, for ``readers`` warm start."""
    fleet = build_fleet(registry, generated_per_family=devices)
    stored = asyncio.run(store_history(influx, fleet, registry, hours=HISTORY_HOURS))
    print(
        f"history: {stored} readings of the last {HISTORY_HOURS:.0f} h stored, "
        f"for the {readers} warm start"
        if stored
        else f"history: kept from an earlier run in {workdir}",
        flush=True,
    )
    return stored


def where_data_is(influxdb: InfluxDB, *, config: Path, data_dir: str, **cli_env: str) -> str:
    """The banner's InfluxDB and CLI lines: how to query the readings, and the environment
    that points the smartunit command at this demo's data (``cli_env`` adds to it)."""
    exports = {
        "SMARTUNIT_CONFIG": str(config),
        "SMARTUNIT_INFLUX_URL": influxdb.url,
        "SMARTUNIT_INFLUX_DB": DEMO_DB,
        "SMARTUNIT_DATA_DIR": data_dir,
        **cli_env,
    }
    export = " ".join(f"{name}={shlex.quote(value)}" for name, value in exports.items())
    return f"""\
  InfluxDB      {influxdb.url}  database {DEMO_DB!r}
      query:           influx -port {influxdb.port} -database {DEMO_DB} \\
                         -execute 'SELECT * FROM chem ORDER BY time DESC LIMIT 5'
  CLI           the smartunit command on this demo's data, in another shell:
      export {export}
      smartunit devices --unregistered"""


def wait_for_collector(
    mqtt_url: str, client_id: str, timeout_s: float = 30.0, *, tls: MqttTls | None = None
) -> None:
    """Block until the collector's retained status says it is online (i.e. subscribed)."""
    online = threading.Event()
    settings = MqttSettings(url=mqtt_url, tls=tls or MqttTls())
    # MQTT 3.1.1: what every broker the collector runs on speaks (a NATS gateway refuses 5)
    client = make_client(settings, client_id=f"wait-{os.getpid()}", protocol=paho.MQTTv311)
    topic = collector_status_topic(client_id)
    client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
    client.on_message = lambda _c, _u, msg: online.set() if b'"online"' in msg.payload else None
    endpoint = MqttSettings(url=mqtt_url).endpoint
    client.connect(endpoint.host, endpoint.port)
    client.loop_start()
    try:
        if not online.wait(timeout_s):
            raise ServiceStartError(f"the collector did not come online within {timeout_s:.0f} s")
    finally:
        client.disconnect()
        client.loop_stop()


def secure_broker(directory: Path, unit_ids: list[str]) -> tuple[Mosquitto, dict[str, str]]:
    """A broker that lets in only the demo's principals, each with a fresh password: the
    collector, the simulator, a read-only observer and a panel for each unit."""
    users = {
        name: secrets.token_urlsafe(16)
        for name in (COLLECTOR_USER, SIMULATOR_USER, OBSERVER_USER, *map(panel_user, unit_ids))
    }
    auth = BrokerAuth(password_file=directory / "passwd", acl_file=directory / "mosquitto.acl")
    write_password_file(auth.password_file, users)
    auth.acl_file.write_text(broker_acl(unit_ids))
    write_credentials(directory / "credentials.txt", users)
    return Mosquitto(directory, auth=auth), users


def mqtt_url(broker: Mosquitto, user: str, password: str) -> str:
    return f"mqtt://{user}:{password}@127.0.0.1:{broker.port}"


def count_readings(influx: InfluxSettings) -> dict[str, int]:
    counts = dict.fromkeys(FAMILIES, 0)
    field_of = {family: plugin.count_field for family, plugin in PLUGINS.items()}
    for family in FAMILIES:
        series = query_sync(influx, f'SELECT count("{field_of[family]}") FROM "{family}"')
        if series:
            counts[family] = int(series[0]["values"][0][1])
    return counts


def run_demo(args: argparse.Namespace) -> int:
    # the collector and the simulator read the shipped files while the demo runs
    with shipped_config_dir() as config_dir:
        if args.config_dir:
            print(config_dir)
            return 0
        return _run_demo(args, config_dir / SAMPLE_CONFIG)


def _run_demo(args: argparse.Namespace, config: Path) -> int:
    registry = shipped_registry(config)
    unit_ids = list(registry.units)

    def demo(session: DemoSession) -> None:
        workdir = session.workdir
        broker, users = secure_broker(workdir / "mosquitto", unit_ids)
        influxdb = InfluxDB(workdir / "influxdb")
        session.services.callback(broker.stop)
        session.services.callback(influxdb.stop)
        broker.start()
        influxdb.start()
        influx = InfluxSettings(url=influxdb.url, database=DEMO_DB)
        stored = store_demo_history(influx, registry, args.devices, workdir, readers="collector's")
        collector_url = mqtt_url(broker, COLLECTOR_USER, users[COLLECTOR_USER])
        http_port = free_port()
        env = {
            **os.environ,
            "SMARTUNIT_MQTT_URL": collector_url,
            "SMARTUNIT_INFLUX_URL": influxdb.url,
            "SMARTUNIT_INFLUX_DB": DEMO_DB,
            "SMARTUNIT_DATA_DIR": str(workdir / "data"),
            "SMARTUNIT_HTTP_PORT": str(http_port),
            "SMARTUNIT_PUBLIC_URL": f"http://127.0.0.1:{http_port}",
            # the console's sign-in for this run only; a real deployment sets its own
            "SMARTUNIT_API_TOKEN": os.environ.get("SMARTUNIT_API_TOKEN")
            or secrets.token_urlsafe(12),
        }
        children = session.children
        children["collector"] = spawn(
            [*SMARTUNIT, "run", "--config", str(config)],
            env=env,
            log_path=workdir / "collector.log",
        )
        wait_for_collector(collector_url, "smartunit-collector")
        labels = workdir / "labels.jsonl"
        simulate = [
            *SMARTUNIT, "simulate", "--config", str(config), "--generate", str(args.devices),
            "--labels", str(labels),
            *(f"--schedule={s.after_s}:{s.device}:{s.kind}:{s.duration_s}" for s in OPENING),
            "--anomaly-every", str(ANOMALY_EVERY_S),
            "--faulty-message-every", str(FAULTY_MESSAGE_EVERY_S),
        ]  # fmt: skip
        simulator_url = mqtt_url(broker, SIMULATOR_USER, users[SIMULATOR_USER])
        children["simulator"] = spawn(
            simulate,
            env={**env, "SMARTUNIT_MQTT_URL": simulator_url},
            log_path=workdir / "simulator.log",
        )
        _banner(broker, influxdb, workdir, env, users=users, unit_ids=unit_ids, config=config)
        watch_demo(influx, args.duration, children, [workdir / "simulator.log"], stored=stored)

    return run_demo_session("demo", args.workdir, demo)


def _banner(
    broker: Mosquitto,
    influxdb: InfluxDB,
    workdir: Path,
    env: dict[str, str],
    *,
    users: dict[str, str],
    unit_ids: list[str],
    config: Path,
) -> None:
    observe = f"mosquitto_sub -p {broker.port} -u {OBSERVER_USER} -P {users[OBSERVER_USER]} -v"
    unit = unit_ids[0] if unit_ids else "UNIT"
    panel = panel_user(unit)
    print(
        f"""
SmartUnit Monitor demo is running (Ctrl-C stops everything).
  Console       http://127.0.0.1:{env["SMARTUNIT_HTTP_PORT"]}/
      sign in with any name and the token {env["SMARTUNIT_API_TOKEN"]}
  MQTT broker   {broker.url}  (signed-in clients only: {broker.directory}/credentials.txt)
      watch devices:   {observe} -t 'smartunit/v1/#'
      rejections:      {observe} -t 'smartunit/v1/_rejected/#'
      ack on site:     mosquitto_pub -p {broker.port} -u '{panel}' -P {users.get(panel, "...")} \\
                         -t 'smartunit/v1/units/{unit}/ack' -m '{{"alert_id": 1}}'
{where_data_is(influxdb, config=config, data_dir=env["SMARTUNIT_DATA_DIR"])}
  logs          {workdir}/collector.log, {workdir}/simulator.log
{ANOMALIES},
                {workdir}/labels.jsonl when over
""",
        flush=True,
    )


def watch_demo(
    influx: InfluxSettings,
    duration_s: float,
    children: dict[str, subprocess.Popen[bytes]],
    simulator_logs: list[Path],
    *,
    stored: int,
) -> None:
    started = time.monotonic()
    previous = stored  # the history: "since last" counts what came in live
    injections = [_Injections(log) for log in simulator_logs]
    while duration_s <= 0 or time.monotonic() - started < duration_s:
        time.sleep(
            min(5.0, max(duration_s - (time.monotonic() - started), 0.1)) if duration_s > 0 else 5.0
        )
        for log in injections:
            for line in log.new():
                print(line, flush=True)
        for name, child in children.items():
            if child.poll() is not None:
                raise ServiceStartError(f"the {name} exited with code {child.returncode}")
        with contextlib.suppress(SmartUnitError):
            counts = count_readings(influx)
            total = sum(counts.values())
            shown = ", ".join(f"{family} {n}" for family, n in counts.items())
            print(
                f"readings in InfluxDB: {total} ({shown}), +{total - previous} since last",
                flush=True,
            )
            previous = total


class _Injections:
    """The simulator's log lines that tell what it injected, as they are written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""

    def new(self) -> list[str]:
        try:
            with self.path.open("rb") as log:
                log.seek(self.offset)
                chunk = log.read()
        except FileNotFoundError:
            return []
        self.offset += len(chunk)
        *lines, self.partial = (self.partial + chunk).split(b"\n")
        marker = f"simulator: {INJECTED} "
        found = []
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            if marker in line:
                found.append("simulator " + line.split("simulator: ", 1)[1])
        return found
