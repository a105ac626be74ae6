"""Start a real NATS cluster (JetStream and its MQTT gateway) on free loopback ports in a
private directory, as fieldtools/localservices.py starts Mosquitto and InfluxDB: for the
tests, the cluster demo and the benchmarks of ``transport = "nats"``."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from collector.families import FAMILIES
from collector.natssubjects import PARTITION_ROOT
from fieldtools.brokerauth import OBSERVER_USER, SIMULATOR_USER
from fieldtools.localservices import (
    find_binary,
    free_port,
    port_open,
    spawn,
    stop_process,
    wait_until,
)


@dataclass
class NatsNode:
    """One nats-server of a ``NatsCluster``: client, cluster-route and MQTT ports."""

    name: str
    directory: Path
    port: int
    route_port: int
    mqtt_port: int
    monitor_port: int
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://127.0.0.1:{self.mqtt_port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "nats-server.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


ROUTE_USER = "smartunit-route"


@dataclass(frozen=True)
class NatsUsers:
    """Who may connect to a cluster's client and MQTT ports, and what each may do: the
    principals of fieldtools/brokerauth.py, as NATS users (an MQTT topic ``a/b`` is the
    subject ``a.b``). ``passwords`` (user name -> password) names the users that exist;
    the cluster's nodes join each other with ``route_password``."""

    passwords: Mapping[str, str]
    route_password: str

    @classmethod
    def fresh(cls, names: Iterable[str]) -> NatsUsers:
        """These users, each with a new random password (URL-safe)."""
        return cls({name: secrets.token_urlsafe(16) for name in names}, secrets.token_urlsafe(16))

    def authorization(self) -> str:
        users = ",\n".join(
            f'    {{ user: "{name}", password: "{password}"{_permissions(name)} }}'
            for name, password in self.passwords.items()
        )
        return f"authorization {{\n  users = [\n{users}\n  ]\n}}"


def _permissions(user: str) -> str:
    """A principal's rights; the collector (and a user not known here) has every right."""
    if user == SIMULATOR_USER:  # speaks for any device: their data and status only
        # A publish is checked against its subject after the server's mapping, so data is
        # allowed into its partitioned subject (any partition: the mapping chooses it).
        topics = [f"{PARTITION_ROOT}.*.{family}.*.data" for family in FAMILIES]
        topics += [f"smartunit.v1.{family}.*.status" for family in FAMILIES]
        return f", permissions: {{ publish: {json.dumps(topics)}, subscribe: [] }}"
    if user == OBSERVER_USER:
        # "smartunit/v1/#" is two subscriptions (the level itself and all below it);
        # "$MQTT.sub.>": the gateway's own subject for a QoS 1 subscription's consumer
        watched = json.dumps(["smartunit.v1", "smartunit.v1.>", "$MQTT.sub.>"])
        return f", permissions: {{ publish: [], subscribe: {watched} }}"
    return ""


@dataclass
class NatsCluster:
    """``size`` nats-servers on loopback with JetStream and an MQTT 3.1.1 listener each.

    The data subjects are mapped into ``partitions`` partitions
    (``collector.natssubjects.server_mappings``), and the MQTT gateway keeps its streams
    with as many replicas as there are nodes, up to 3. Without ``users`` anyone on this
    machine may connect (tests, benchmarks); with them (``NatsUsers``) only those users,
    each with its rights, and only the nodes themselves may join as cluster routes."""

    directory: Path
    size: int = 3
    partitions: int = 64
    binary: str = ""  # empty: $SMARTUNIT_NATS_SERVER, else nats-server on the PATH
    users: NatsUsers | None = None
    nodes: list[NatsNode] = field(default_factory=list)

    @property
    def urls(self) -> str:
        """Every node's client URL, comma-separated (what ``nats.url`` takes)."""
        return ",".join(node.url for node in self.nodes)

    def urls_for(self, user: str) -> str:
        """Every node's client URL signed in as ``user`` (one of ``users``)."""
        return ",".join(self._signed_in(node.url, user) for node in self.nodes)

    def mqtt_url_for(self, node: NatsNode, user: str) -> str:
        """A node's MQTT gateway signed in as ``user`` (one of ``users``)."""
        return self._signed_in(node.mqtt_url, user)

    def _signed_in(self, url: str, user: str) -> str:
        assert self.users is not None, "a cluster without users takes anyone"
        scheme, _, host = url.partition("://")
        return f"{scheme}://{user}:{self.users.passwords[user]}@{host}"

    @property
    def mqtt_url(self) -> str:
        return self.nodes[0].mqtt_url

    @property
    def replicas(self) -> int:
        return min(self.size, 3)

    def version(self) -> tuple[int, ...]:
        done = subprocess.run(
            [self._binary(), "--version"], capture_output=True, text=True, check=False
        )
        number = done.stdout.strip().rsplit("v", 1)[-1]
        return tuple(int(part) for part in number.split(".") if part.isdigit())

    def _binary(self) -> str:
        if not self.binary:
            self.binary = os.environ.get("SMARTUNIT_NATS_SERVER") or find_binary("nats-server")
        return self.binary

    def config_text(self, node: NatsNode) -> str:
        from collector.natssubjects import server_mappings  # noqa: PLC0415 (a field tool)

        mappings = "\n".join(
            f'  "{source}": "{target}"'
            for source, target in server_mappings(self.partitions).items()
        )
        lines = [
            f"server_name: {node.name}",
            f"listen: 127.0.0.1:{node.port}",
            f"http: 127.0.0.1:{node.monitor_port}",
            f'jetstream {{ store_dir: "{node.directory}/jetstream" }}',
            # The gateway's streams hold what devices published and were acknowledged for.
            f"mqtt {{ listen: 127.0.0.1:{node.mqtt_port}, stream_replicas: {self.replicas} }}",
            f"mappings = {{\n{mappings}\n}}",
        ]
        if self.users is not None:
            lines.append(self.users.authorization())
        if self.size > 1:
            signed_in = f"{ROUTE_USER}:{self.users.route_password}@" if self.users else ""
            routes = ", ".join(
                f"nats://{signed_in}127.0.0.1:{other.route_port}"
                for other in self.nodes
                if other != node
            )
            route_auth = (
                f'authorization {{ user: {ROUTE_USER}, password: "{self.users.route_password}" }}, '
                if self.users
                else ""
            )
            lines.append(
                f"cluster {{ name: smartunit, listen: 127.0.0.1:{node.route_port}, "
                f"{route_auth}routes: [{routes}] }}"
            )
        return "\n".join(lines) + "\n"

    def start(self, *, timeout_s: float = 30.0) -> NatsCluster:
        if not self.nodes:
            self.nodes = [
                NatsNode(
                    name=f"n{index + 1}",
                    directory=self.directory / f"n{index + 1}",
                    port=free_port(),
                    route_port=free_port(),
                    mqtt_port=free_port(),
                    monitor_port=free_port(),
                )
                for index in range(self.size)
            ]
        for node in self.nodes:
            self._spawn(node)
        for node in self.nodes:
            self._wait_ready(node, timeout_s)
        return self

    def _spawn(self, node: NatsNode) -> None:
        node.directory.mkdir(parents=True, exist_ok=True)
        conf = node.directory / "nats.conf"
        conf.write_text(self.config_text(node))
        node.proc = spawn([self._binary(), "-c", str(conf)], log_path=node.log_path)

    def _wait_ready(self, node: NatsNode, timeout_s: float) -> None:
        assert node.proc is not None

        # Ready for devices once JetStream is: in a cluster, once a meta leader is elected
        # (before that the gateway refuses MQTT sessions), and the MQTT listener is open.
        def ready() -> bool:
            try:
                url = f"http://127.0.0.1:{node.monitor_port}/jsz"
                with urllib.request.urlopen(url, timeout=0.5) as resp:
                    state = json.load(resp)
            except (urllib.error.URLError, OSError, ValueError):
                return False
            leader = self.size == 1 or bool(state.get("meta_cluster", {}).get("leader"))
            return leader and port_open(node.mqtt_port)

        wait_until(ready, node.proc, f"nats-server {node.name}", node.log_path, timeout_s)

    def kill(self, node: NatsNode) -> None:
        """SIGKILL one node: what a crash or a power cut does."""
        if node.proc is not None and node.proc.poll() is None:
            node.proc.kill()
            node.proc.wait()

    def restart(self, node: NatsNode, *, timeout_s: float = 30.0) -> None:
        self.kill(node)
        self._spawn(node)
        self._wait_ready(node, timeout_s)

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None:
                stop_process(node.proc)
