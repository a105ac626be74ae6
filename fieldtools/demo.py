"""``smartunit demo``: the whole service on this machine, with simulated devices.

Starts Mosquitto and InfluxDB on free loopback ports in a temporary directory, then the
collector and the simulator as their own processes, prints where to look and how many
readings have arrived, and on Ctrl-C (or after ``--duration``) stops everything in
order. Every child dies with the demo even if the demo itself is killed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
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
    write_password_file,
)
from fieldtools.localservices import (
    BrokerAuth,
    InfluxDB,
    Mosquitto,
    free_port,
    spawn,
    stop_process,
)
from fieldtools.shipped import SAMPLE_CONFIG, shipped_config_dir

DEMO_DB = "smartunit"


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
    # the plain passwords, for the person running the demo
    credentials = directory / "credentials.txt"
    credentials.touch(mode=0o600)
    credentials.write_text("".join(f"{name} {password}\n" for name, password in users.items()))
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
    temporary = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="smartunit-demo-")) if temporary else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    registry_path = load_settings(config).registry.path
    unit_ids = list(Registry.load(registry_path).units) if registry_path else []
    broker, users = secure_broker(workdir / "mosquitto", unit_ids)
    influxdb = InfluxDB(workdir / "influxdb")
    children: dict[str, subprocess.Popen[bytes]] = {}
    try:
        broker.start()
        influxdb.start()
        collector_url = mqtt_url(broker, COLLECTOR_USER, users[COLLECTOR_USER])
        env = {
            **os.environ,
            "SMARTUNIT_MQTT_URL": collector_url,
            "SMARTUNIT_INFLUX_URL": influxdb.url,
            "SMARTUNIT_INFLUX_DB": DEMO_DB,
            "SMARTUNIT_DATA_DIR": str(workdir / "data"),
            "SMARTUNIT_HTTP_PORT": str(free_port()),
            # the console's sign-in for this run only; a real deployment sets its own
            "SMARTUNIT_API_TOKEN": os.environ.get("SMARTUNIT_API_TOKEN")
            or secrets.token_urlsafe(12),
        }
        smartunit = [sys.executable, "-m", "collector.cli"]
        children["collector"] = spawn(
            [*smartunit, "run", "--config", str(config)],
            env=env,
            log_path=workdir / "collector.log",
        )
        wait_for_collector(collector_url, "smartunit-collector")
        labels = workdir / "labels.jsonl"
        simulate = [
            *smartunit, "simulate", "--config", str(config), "--generate", str(args.devices),
            "--anomaly-every", "45", "--labels", str(labels), "--backfill-hours", "6",
        ]  # fmt: skip
        simulator_url = mqtt_url(broker, SIMULATOR_USER, users[SIMULATOR_USER])
        children["simulator"] = spawn(
            simulate,
            env={**env, "SMARTUNIT_MQTT_URL": simulator_url},
            log_path=workdir / "simulator.log",
        )
        influx = InfluxSettings(url=influxdb.url, database=DEMO_DB)
        _banner(broker, influxdb, workdir, env, users=users, unit_ids=unit_ids)
        _watch(influx, args.duration, children)
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
    except SmartUnitError as exc:
        print(f"smartunit demo: {exc}", file=sys.stderr)
        return 1
    finally:
        for child in reversed(children.values()):
            stop_process(child)
        influxdb.stop()
        broker.stop()
        if temporary:
            shutil.rmtree(workdir, ignore_errors=True)
    print("demo stopped; no process left running", flush=True)
    return 0


def _banner(
    broker: Mosquitto,
    influxdb: InfluxDB,
    workdir: Path,
    env: dict[str, str],
    *,
    users: dict[str, str],
    unit_ids: list[str],
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
  InfluxDB      {influxdb.url}  database {DEMO_DB!r}
      query:           influx -port {influxdb.port} -database {DEMO_DB} \\
                         -execute 'SELECT * FROM chem ORDER BY time DESC LIMIT 5'
  logs          {workdir}/collector.log, {workdir}/simulator.log
  anomalies     {workdir}/labels.jsonl (injected every 45 s)
""",
        flush=True,
    )


def _watch(
    influx: InfluxSettings, duration_s: float, children: dict[str, subprocess.Popen[bytes]]
) -> None:
    started = time.monotonic()
    previous = 0
    while duration_s <= 0 or time.monotonic() - started < duration_s:
        time.sleep(
            min(5.0, max(duration_s - (time.monotonic() - started), 0.1)) if duration_s > 0 else 5.0
        )
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
