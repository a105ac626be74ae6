"""``smartunit cluster-demo``: the cluster on this machine, with simulated devices.

Starts a 3-node NATS cluster (JetStream, the MQTT gateway on each node, the partition
mapping), a PostgreSQL server for the shared alert state, InfluxDB, three collectors
(transport "nats", alerts in PostgreSQL, each its own API port and data directory) and
three simulators, each on another node's MQTT gateway with a third of the fleet. Prints
where to look as ``smartunit demo`` does, and on Ctrl-C (or after ``--duration``) stops
everything in order. Every child dies with the demo even if the demo itself is killed.

The cluster admits only the demo's users, each with a fresh password (written to
``nats/credentials.txt`` in the demo's directory): the collectors, the simulators (data and
status of any device) and a read-only observer; its nodes join each other with a route
password of their own (docs/cluster.md, "Who may connect").
"""

from __future__ import annotations

import argparse
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from collector.config import InfluxSettings
from fieldtools.brokerauth import (
    COLLECTOR_USER,
    OBSERVER_USER,
    SIMULATOR_USER,
    write_credentials,
)
from fieldtools.demo import (
    ANOMALIES,
    ANOMALY_EVERY_S,
    DEMO_DB,
    FAULTY_MESSAGE_EVERY_S,
    OPENING,
    SMARTUNIT,
    DemoSession,
    run_demo_session,
    shipped_registry,
    store_demo_history,
    wait_for_collector,
    watch_demo,
    where_data_is,
)
from fieldtools.localservices import InfluxDB, free_port, spawn
from fieldtools.natscluster import NatsCluster, NatsUsers
from fieldtools.postgres import PostgresServer
from fieldtools.shipped import SAMPLE_CONFIG, shipped_config_dir

NODES = 3
COLLECTORS = 3
PARTITIONS = 64  # the shipped configuration's nats.partitions
ALERTS_DB = "smartunit"


@dataclass(frozen=True, kw_only=True)
class Instance:
    """One collector of the demo: its MQTT client id, API and data directory."""

    client_id: str
    http_port: int
    data_dir: Path
    mqtt_url: str

    @property
    def console(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/"


def run_cluster_demo(args: argparse.Namespace) -> int:
    with shipped_config_dir() as config_dir:
        return _run(args, config_dir / SAMPLE_CONFIG)


def _run(args: argparse.Namespace, config: Path) -> int:
    registry = shipped_registry(config)

    def demo(session: DemoSession) -> None:
        workdir = session.workdir
        users = NatsUsers.fresh([COLLECTOR_USER, SIMULATOR_USER, OBSERVER_USER])
        cluster = NatsCluster(workdir / "nats", size=NODES, partitions=PARTITIONS, users=users)
        write_credentials(workdir / "nats" / "credentials.txt", users.passwords)
        influxdb = InfluxDB(workdir / "influxdb")
        session.services.callback(cluster.stop)
        cluster.start()
        postgres = PostgresServer()
        session.services.callback(postgres.close)
        alerts_store = postgres.new_database(ALERTS_DB)
        session.services.callback(influxdb.stop)
        influxdb.start()
        influx = InfluxSettings(url=influxdb.url, database=DEMO_DB)
        stored = store_demo_history(influx, registry, args.devices, workdir, readers="collectors'")
        token = os.environ.get("SMARTUNIT_API_TOKEN") or secrets.token_urlsafe(12)
        instances = [
            Instance(
                client_id=f"smartunit-collector-{index + 1}",
                http_port=free_port(),
                data_dir=workdir / f"collector-{index + 1}",
                mqtt_url=cluster.mqtt_url_for(cluster.nodes[index % NODES], COLLECTOR_USER),
            )
            for index in range(COLLECTORS)
        ]
        base_env = {
            **os.environ,
            "SMARTUNIT_TRANSPORT": "nats",
            "SMARTUNIT_NATS_URL": cluster.urls_for(COLLECTOR_USER),
            "SMARTUNIT_INFLUX_URL": influxdb.url,
            "SMARTUNIT_INFLUX_DB": DEMO_DB,
            "SMARTUNIT_ALERTS_STORE": alerts_store,
            # the consoles' sign-in for this run only; a real deployment sets its own
            "SMARTUNIT_API_TOKEN": token,
        }
        for instance in instances:
            env = {
                **base_env,
                "SMARTUNIT_MQTT_URL": instance.mqtt_url,
                "SMARTUNIT_MQTT_CLIENT_ID": instance.client_id,
                "SMARTUNIT_DATA_DIR": str(instance.data_dir),
                "SMARTUNIT_HTTP_PORT": str(instance.http_port),
                "SMARTUNIT_PUBLIC_URL": instance.console.rstrip("/"),
            }
            session.children[instance.client_id] = spawn(
                [*SMARTUNIT, "run", "--config", str(config)],
                env=env,
                log_path=workdir / f"{instance.client_id}.log",
            )
        for index, instance in enumerate(instances):
            # online means its partition consumers exist: devices may publish
            node = cluster.nodes[index % NODES]
            observer = cluster.mqtt_url_for(node, OBSERVER_USER)
            wait_for_collector(observer, instance.client_id, timeout_s=90)
        simulator_logs = []
        for index, node in enumerate(cluster.nodes):
            log = workdir / f"simulator-{index + 1}.log"
            simulator_logs.append(log)
            simulate = [
                *SMARTUNIT, "simulate", "--config", str(config), "--generate", str(args.devices),
                "--shard", f"{index}/{NODES}", "--seed", "1",
                "--labels", str(workdir / f"labels-{index + 1}.jsonl"),
                *(f"--schedule={s.after_s}:{s.device}:{s.kind}:{s.duration_s}" for s in OPENING),
                # the three together inject as often as the single-node demo's one
                "--anomaly-every", str(ANOMALY_EVERY_S * NODES),
                "--faulty-message-every", str(FAULTY_MESSAGE_EVERY_S * NODES),
            ]  # fmt: skip
            # its password in its environment, not on a command line others can read
            simulator_url = cluster.mqtt_url_for(node, SIMULATOR_USER)
            session.children[f"simulator-{index + 1}"] = spawn(
                simulate, env={**base_env, "SMARTUNIT_MQTT_URL": simulator_url}, log_path=log
            )
        _banner(cluster, postgres, influxdb, instances, token=token, config=config, workdir=workdir)
        watch_demo(influx, args.duration, session.children, simulator_logs, stored=stored)

    return run_demo_session("cluster-demo", args.workdir, demo)


def _banner(
    cluster: NatsCluster,
    postgres: PostgresServer,
    influxdb: InfluxDB,
    instances: list[Instance],
    *,
    token: str,
    config: Path,
    workdir: Path,
) -> None:
    assert cluster.users is not None
    observer_password = cluster.users.passwords[OBSERVER_USER]
    data = where_data_is(
        influxdb,
        config=config,
        data_dir=str(instances[0].data_dir),
        SMARTUNIT_ALERTS_STORE=postgres.database_url(ALERTS_DB),
    )
    consoles = "\n".join(
        f"  Console {index}     {instance.console}  ({instance.client_id}, "
        f"data {instance.data_dir})"
        for index, instance in enumerate(instances, start=1)
    )
    gateways = ", ".join(node.mqtt_url for node in cluster.nodes)
    port = cluster.nodes[0].mqtt_port
    print(
        f"""
SmartUnit Monitor cluster demo is running (Ctrl-C stops everything).
{consoles}
      each one shows the same alerts; sign in with any name and the token {token}
  NATS cluster  {cluster.urls}  ({PARTITIONS} partitions, JetStream replicas {cluster.replicas})
      MQTT gateways:   {gateways}
                       (signed-in users only: {cluster.directory}/credentials.txt)
      watch devices:   mosquitto_sub -V mqttv311 -p {port} -v -t 'smartunit/v1/#' \\
                         -u {OBSERVER_USER} -P {observer_password}
      monitoring:      http://127.0.0.1:{cluster.nodes[0].monitor_port}/jsz
  PostgreSQL    {postgres.database_url(ALERTS_DB)}  (the shared alert state)
      query:           psql {postgres.database_url(ALERTS_DB)} \\
                         -c 'SELECT id, unit, colour, state FROM alerts ORDER BY id DESC LIMIT 5'
{data}
  logs          {workdir}/smartunit-collector-N.log, {workdir}/simulator-N.log,
                {workdir}/nats/nN/nats-server.log, {postgres.log}
{ANOMALIES}
""",
        flush=True,
    )
