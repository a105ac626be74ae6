"""The shipped deployment files: a valid compose file, broker configs that admit only
signed-in clients and do not drop, and the local servers' CPU priority."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import paho.mqtt.client as paho
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from collector.config import IngestSettings
from collector.configfile import load_settings
from collector.natssubjects import server_mappings
from collector.registry import Registry
from fieldtools.demo import secure_broker, wait_for_collector
from fieldtools.localservices import (
    BrokerAuth,
    InfluxDB,
    Mosquitto,
    find_binary,
    free_port,
    port_open,
    spawn,
    stop_process,
)
from fieldtools.simulate import schedule_problems
from fieldtools.simulator import ScheduledAnomaly, build_fleet
from tests.conftest import collector_env, poll

ROOT = Path(__file__).resolve().parent.parent


COMPOSE_SECRETS = {
    "SMARTUNIT_INFLUX_TOKEN": "t",
    "INFLUXDB_PASSWORD": "p",
    "GRAFANA_PASSWORD": "g",
    "SMARTUNIT_API_TOKEN": "a",
    "SMARTUNIT_MQTT_PASSWORD": "m",
}


def compose_config(env: dict[str, str], *profiles: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose (Debian package) is installed by scripts/install-deps.sh"
    chosen = [arg for profile in profiles for arg in ("--profile", profile)]
    return subprocess.run(
        [binary, "-f", str(ROOT / "docker-compose.yml"), *chosen, "config"],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], **env},
        cwd=tmp_dir_without_dotenv(),
    )


def tmp_dir_without_dotenv() -> str:
    # docker-compose reads .env from the working directory; a developer's own must not
    # change what the test sees
    return tempfile.gettempdir()


def test_compose_file_is_valid_and_needs_its_secrets() -> None:
    done = compose_config(COMPOSE_SECRETS)
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(done.stdout)
    services = config["services"]
    assert {"mosquitto", "influxdb", "grafana", "collector", "simulator"} <= set(services)
    assert services["influxdb"]["image"].startswith("influxdb:2")
    assert services["simulator"]["profiles"] == ["demo"]
    # the alert path comes first when the stack shares a host (docs/deploy.md)
    default_weight = 1024
    influx_weight = services["influxdb"].get("cpu_shares", default_weight)
    assert influx_weight < services["collector"].get("cpu_shares", default_weight)
    mounts = {Path(m["target"]): m["source"] for m in _volumes(services["mosquitto"])}
    assert Path(mounts[Path("/mosquitto/config/mosquitto.conf")]) == ROOT / "config/mosquitto.conf"
    assert Path(mounts[Path("/mosquitto/config/mosquitto.acl")]) == ROOT / "config/mosquitto.acl"
    # the broker starts only once its password file holds the service's own users
    assert services["mosquitto"]["depends_on"]["mosquitto-passwd"] == {
        "condition": "service_completed_successfully"
    }
    init = services["mosquitto-passwd"]
    script = {Path(m["target"]): m["source"] for m in _volumes(init)}
    assert Path(script[Path(init["entrypoint"][-1])]) == ROOT / "config/mosquitto-passwd.sh"
    assert {m["source"] for m in _volumes(init)} & {
        m["source"] for m in _volumes(services["mosquitto"])
    }
    collector_url = services["collector"]["environment"]["SMARTUNIT_MQTT_URL"]
    assert collector_url == "mqtt://smartunit-collector:m@mosquitto:1883"
    # the published port reaches the API only if it listens on the container's interfaces
    collector_env = services["collector"]["environment"]
    assert collector_env["SMARTUNIT_HTTP_HOST"] == "0.0.0.0"
    published = {int(port["target"]) for port in _ports(services["collector"])}
    assert int(collector_env["SMARTUNIT_HTTP_PORT"]) in published
    assert collector_env["SMARTUNIT_PUBLIC_URL"] == "http://localhost:8080"
    # the simulator's script names devices of the registry the image ships
    command = services["simulator"]["command"]
    schedule = [
        ScheduledAnomaly.parse(command[i + 1]) for i, a in enumerate(command) if a == "--schedule"
    ]
    fleet = build_fleet(Registry.load(ROOT / "config" / "registry.example.toml"))
    assert schedule and schedule_problems(fleet, schedule) == []
    public = compose_config({**COMPOSE_SECRETS, "SMARTUNIT_PUBLIC_URL": "https://su.example"})
    public_env = yaml.safe_load(public.stdout)["services"]["collector"]["environment"]
    assert public_env["SMARTUNIT_PUBLIC_URL"] == "https://su.example"
    assert "SMARTUNIT_MQTT_URL" not in services["grafana"]["environment"]  # not its secret
    # a missing secret stops the stack instead of starting it with a default
    for secret in ("INFLUXDB_PASSWORD", "SMARTUNIT_MQTT_PASSWORD"):
        missing = compose_config({k: v for k, v in COMPOSE_SECRETS.items() if k != secret})
        assert missing.returncode != 0 and secret in missing.stderr


def test_the_cluster_profile_runs_three_nodes_postgresql_and_three_collectors() -> None:
    done = compose_config({**COMPOSE_SECRETS, "SMARTUNIT_NATS_PASSWORD": "n"}, "cluster")
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    nodes = [f"nats-{n}" for n in (1, 2, 3)]
    collectors = [f"collector-{n}" for n in (1, 2, 3)]
    for name in (*nodes, "postgres", *collectors):
        assert services[name]["profiles"] == ["cluster"], name
    # every node runs the shipped cluster file under its own name, with its own data
    node_config = ROOT / "config" / "nats-cluster.conf"
    names = set()
    for node in nodes:
        mounts = {m["target"]: m["source"] for m in _volumes(services[node])}
        assert Path(mounts["/etc/nats/nats-cluster.conf"]) == node_config
        assert services[node]["command"] == ["-c", "/etc/nats/nats-cluster.conf"]
        names.add(services[node]["environment"]["NATS_SERVER_NAME"])
        # every node knows the collectors' password, and refuses to start without one
        assert services[node]["environment"]["SMARTUNIT_NATS_PASSWORD"] == "n"
        assert services[node]["entrypoint"] == services[nodes[0]]["entrypoint"]
    assert names == set(nodes)
    assert len({_volume_names(services[node]) for node in nodes}) == 3
    text = node_config.read_text()
    assert "server_name: $NATS_SERVER_NAME" in text
    assert set(re.findall(r"nats://([\w-]+):6222", text)) == set(nodes)
    # the servers' mapping is the one the collectors check at start, for their partitions
    partitions = load_settings(ROOT / "config" / "smartunit.example.toml").nats.partitions
    ((source, target),) = server_mappings(partitions).items()
    assert f'"{source}": "{target}"' in text
    assert re.search(r"stream_replicas:\s*3\b", text)

    client_ids, gateways, published = set(), set(), set()
    for name in collectors:
        service = services[name]
        env = service["environment"]
        assert env["SMARTUNIT_TRANSPORT"] == "nats"
        servers = [urlsplit(url) for url in env["SMARTUNIT_NATS_URL"].split(",")]
        assert {server.hostname for server in servers} == set(nodes)
        gateway = urlsplit(env["SMARTUNIT_MQTT_URL"])
        for signed_in in (*servers, gateway):  # the nodes admit signed-in clients only
            assert (signed_in.username, signed_in.password) == ("smartunit-collector", "n")
        assert env["SMARTUNIT_ALERTS_STORE"].startswith("postgresql://smartunit@postgres:5432/")
        # the password from the environment, never in the URL (docs/cluster.md)
        assert "PGPASSWORD" in env and urlsplit(env["SMARTUNIT_ALERTS_STORE"]).password is None
        assert service["depends_on"]["postgres"] == {"condition": "service_healthy"}
        client_ids.add(env["SMARTUNIT_MQTT_CLIENT_ID"])
        gateways.add(env["SMARTUNIT_MQTT_URL"])
        published |= {int(port["published"]) for port in _ports(service)}
        assert env["SMARTUNIT_HTTP_HOST"] == "0.0.0.0"
        assert len(_volume_names(service)) == 1
    assert len(client_ids) == 3 and len(gateways) == 3  # one identity and one node each
    assert len(published) == 3 and 8080 not in published  # beside the single-node console
    assert len({_volume_names(services[name]) for name in collectors}) == 3
    # the single-node stack is unchanged by the profile
    single = yaml.safe_load(compose_config(COMPOSE_SECRETS).stdout)["services"]
    assert single["collector"]["environment"].get("SMARTUNIT_TRANSPORT", "mqtt") == "mqtt"


def _volume_names(service: dict) -> frozenset[str]:
    return frozenset(m["source"] for m in _volumes(service) if not m["source"].startswith("/"))


def _ports(service: dict) -> list[dict]:
    out = []
    for port in service.get("ports", []):
        if isinstance(port, str):  # short syntax, from older docker-compose versions
            published, target = port.rsplit(":", 1)
            out.append({"published": published, "target": target})
        else:
            out.append(port)
    return out


def test_the_image_listens_on_every_interface() -> None:
    """The Dockerfile's own environment, for a container run without compose."""
    dockerfile = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    env = dict(re.findall(r"(SMARTUNIT_\w+)=(\S+)", dockerfile))
    assert env["SMARTUNIT_HTTP_HOST"] == "0.0.0.0"
    assert env["SMARTUNIT_HTTP_PORT"] == "8080" and "EXPOSE 8080" in dockerfile
    assert env["SMARTUNIT_PUBLIC_URL"].startswith("http")


def _volumes(service: dict) -> list[dict]:
    out = []
    for mount in service.get("volumes", []):
        if isinstance(mount, str):  # short syntax, from older docker-compose versions
            source, target, *_ = mount.split(":")
            out.append({"source": source, "target": target})
        else:
            out.append(mount)
    return out


def test_grafana_provisioning_references_the_dashboards_that_exist() -> None:
    config = yaml.safe_load(compose_config(COMPOSE_SECRETS).stdout)
    grafana = config["services"]["grafana"]
    mounts = {m["target"]: Path(m["source"]) for m in _volumes(grafana)}
    provisioning = ROOT / "dashboards" / "provisioning"
    assert mounts["/etc/grafana/provisioning/dashboards"] == provisioning / "dashboards"
    assert mounts["/etc/grafana/provisioning/datasources"] == provisioning / "datasources"

    (provider,) = yaml.safe_load((provisioning / "dashboards" / "smartunit.yaml").read_text())[
        "providers"
    ]
    served = mounts[provider["options"]["path"]]  # what Grafana finds at the provider's path
    boards = sorted(served.glob("*.json"))
    assert [b.name for b in boards] == sorted(
        [
            "city-overview.json",
            "crowd.json",
            "parking.json",
            "chem-park.json",
            "fire.json",
            "devices.json",
            "collector.json",
        ]
    )
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert Path(home).parent == Path(provider["options"]["path"])
    assert (served / Path(home).name).exists()

    (source,) = yaml.safe_load((provisioning / "datasources" / "smartunit.yaml").read_text())[
        "datasources"
    ]
    for board in boards:
        variables = json.loads(board.read_text())["templating"]["list"]
        assert variables[0]["current"]["value"] == source["uid"]
    # every ${VAR} the datasource file uses is set in Grafana's environment
    used = set(
        re.findall(r"\$\{(\w+)\}", (provisioning / "datasources" / "smartunit.yaml").read_text())
    )
    assert used <= set(grafana["environment"]), used - set(grafana["environment"])


def _setting(text: str, key: str) -> str | None:
    match = re.search(rf"^\s*{key}\s+(\S+)", text, re.MULTILINE)
    return match.group(1) if match else None


def test_shipped_broker_configs_do_not_drop_qos1_messages(tmp_path: Path) -> None:
    """Mosquitto's default max_queued_messages (1000) silently drops QoS 1 messages."""
    for text in (
        (ROOT / "config" / "mosquitto.conf").read_text(),
        Mosquitto(tmp_path).config_text(),
    ):
        assert _setting(text, "max_queued_messages") == "0"
        assert int(_setting(text, "max_queued_bytes") or 0) >= 256 * 1024 * 1024
        assert _setting(text, "persistence") == "true"


def test_every_shipped_broker_config_admits_only_signed_in_clients(tmp_path: Path) -> None:
    shipped = (ROOT / "config" / "mosquitto.conf").read_text()
    demo, _users = secure_broker(tmp_path / "demo", ["xinghua"])
    for text in (shipped, demo.config_text()):
        assert _setting(text, "allow_anonymous") == "false"
        assert _setting(text, "password_file")
        assert _setting(text, "acl_file")
    assert "allow_anonymous true" not in shipped


def signs_in(port: int, user: str | None, password: str | None) -> bool:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"signin-{user}")
    if user is not None:
        client.username_pw_set(user, password)
    codes: list[object] = []
    client.on_connect = lambda _c, _u, _f, reason, _p: codes.append(reason)
    client.connect("127.0.0.1", port)
    client.loop_start()
    deadline = time.monotonic() + 5
    while not codes and time.monotonic() < deadline:
        time.sleep(0.05)
    client.loop_stop()
    client.disconnect()
    assert codes, "the broker did not answer"
    return not getattr(codes[0], "is_failure", True)


@pytest.mark.slow
def test_the_compose_password_script_lets_in_the_collector_and_no_one_else(
    tmp_path: Path,
) -> None:
    """config/mosquitto-passwd.sh with the real mosquitto_passwd, on a real broker with the
    shipped ACL: what the compose stack runs before its broker starts."""
    passwords = tmp_path / "auth" / "passwd"
    env = {
        "PATH": f"{os.environ['PATH']}:/usr/sbin:/usr/local/sbin",
        "MOSQUITTO_PASSWORD_FILE": str(passwords),
        "SMARTUNIT_MQTT_PASSWORD": "first",
    }
    script = str(ROOT / "config" / "mosquitto-passwd.sh")
    subprocess.run(["sh", script], env=env, check=True, capture_output=True)
    with passwords.open("a") as added_by_hand:  # a device's entry survives a restart
        added_by_hand.write(passwords.read_text().replace("smartunit-collector:", "cam-1:"))
    # the next start: a new collector password replaces the old one
    subprocess.run(["sh", script], env={**env, "SMARTUNIT_MQTT_PASSWORD": "second"}, check=True)
    assert oct(passwords.stat().st_mode & 0o777) == "0o600"
    auth = BrokerAuth(password_file=passwords, acl_file=ROOT / "config" / "mosquitto.acl")
    broker = Mosquitto(tmp_path / "broker", persistence=False, auth=auth).start()
    try:
        assert signs_in(broker.port, "smartunit-collector", "second")
        assert signs_in(broker.port, "cam-1", "first")
        assert not signs_in(broker.port, "smartunit-collector", "first")
        assert not signs_in(broker.port, None, None)  # anonymous
        assert not signs_in(broker.port, "smartunit-simulator", "")  # no password set
    finally:
        broker.stop()


def test_the_local_influxdb_yields_the_cpu_to_the_collector(influxdb: InfluxDB) -> None:
    assert influxdb.proc is not None and influxdb.cpu_nice > 0
    proc = Path(f"/proc/{influxdb.proc.pid}")
    threads = [t / "stat" for t in (proc / "task").iterdir()]
    # field 19 of stat is the nice value; the command name before it may hold spaces
    nices = {int(t.read_text().rsplit(")", 1)[1].split()[16]) for t in threads}
    # os.nice adds to the niceness the tests run at (19 at most)
    assert nices == {min(19, os.nice(0) + influxdb.cpu_nice)}  # every thread, later ones too
    autogroup_on = Path("/proc/sys/kernel/sched_autogroup_enabled")
    if autogroup_on.exists() and autogroup_on.read_text().strip() == "1":
        # nice ranks threads only inside a scheduling group: its own group is lowered too
        assert (proc / "autogroup").read_text().split()[-1] == str(influxdb.cpu_nice)


def test_the_local_influxdb_collects_garbage_as_deploy_md_recommends(influxdb: InfluxDB) -> None:
    assert influxdb.proc is not None
    environ = Path(f"/proc/{influxdb.proc.pid}/environ").read_bytes().split(b"\0")
    assert f"GOGC={influxdb.gc_percent}".encode() in environ
    assert f"`GOGC={influxdb.gc_percent}`" in (ROOT / "docs" / "deploy.md").read_text()
    # the shipped stack follows the same advice: its InfluxDB shares a host with the collector
    services = yaml.safe_load(compose_config(COMPOSE_SECRETS).stdout)["services"]
    assert services["influxdb"]["environment"]["GOGC"] == str(influxdb.gc_percent)


SYSTEMD_UNIT = ROOT / "scripts" / "systemd" / "smartunit-collector.service"


def unit_settings(text: str) -> dict[str, dict[str, str]]:
    """A systemd unit file's sections and keys (one value per key, as this unit uses)."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, equals, value = line.partition("=")
        assert current is not None and equals, f"line {number} is neither a section nor a key"
        current[key] = value
    return sections


def test_the_systemd_unit_is_valid_and_stops_within_its_flush(tmp_path: Path) -> None:
    text = SYSTEMD_UNIT.read_text()
    settings = unit_settings(text)
    service = settings["Service"]
    assert set(settings) == {"Unit", "Service", "Install"}
    program, *arguments = service["ExecStart"].split()
    assert program.endswith("/bin/smartunit") and arguments[:2] == ["run", "--config"]
    # SIGKILL must not come before the collector has flushed what it received
    flush_s = IngestSettings().shutdown_flush_s
    assert int(service["TimeoutStopSec"]) >= 2 * flush_s
    assert service["RestartPreventExitStatus"] == "2"  # a configuration error
    verify = shutil.which("systemd-analyze")
    if verify is None:
        return  # parsed above; systemd checks the rest where it is installed
    # as installed with this checkout's smartunit: verify insists the program exists
    installed = tmp_path / SYSTEMD_UNIT.name
    installed.write_text(text.replace(program, str(Path(sys.executable).parent / "smartunit")))
    done = subprocess.run([verify, "verify", str(installed)], capture_output=True, text=True)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def non_loopback_address() -> str | None:
    """This machine's address on its network (what a published container port forwards to)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: it only picks a route
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return None if address.startswith("127.") else address


@pytest.mark.slow
def test_a_collector_told_to_listen_everywhere_answers_on_the_network_address(
    broker, influxdb, database, publisher, tmp_path: Path
) -> None:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no network address besides loopback")
    public_url = "https://smartunit.example:8443"
    env = collector_env(
        broker,
        influxdb,
        database,
        tmp_path / "data",
        SMARTUNIT_HTTP_HOST="0.0.0.0",
        SMARTUNIT_PUBLIC_URL=public_url,
        SMARTUNIT_API_TOKEN="deploy-token",
    )
    config = tmp_path / "smartunit.toml"
    config.write_text(
        f'[mqtt]\nclient_id = "deploy-{database}"\n'
        f"[registry]\npath = '{ROOT / 'config' / 'registry.example.toml'}'\n"
        f"[detection]\nrules = ['{ROOT / 'config' / 'rules.presets.toml'}']\n"
    )
    log = tmp_path / "collector.log"
    command = [sys.executable, "-m", "collector.cli", "run", "--config", str(config)]
    collector = spawn(command, env=env, log_path=log)
    base = f"http://{address}:{env['SMARTUNIT_HTTP_PORT']}"
    headers = {"Authorization": "Bearer deploy-token"}
    try:
        wait_for_collector(broker.url, f"deploy-{database}")
        publisher.publish(
            "smartunit/v1/fire/fire-hg-smoke-01/data", json.dumps({"ts": time.time(), "smoke": 1})
        )

        def alerts() -> list[dict]:
            try:
                answer = httpx.get(f"{base}/api/alerts", headers=headers, timeout=2)
            except httpx.TransportError:
                return []
            return answer.json() if answer.status_code == 200 else []

        found = poll(alerts, bool, timeout_s=30)
        assert found, log.read_text()[-2000:]
        assert found[0]["url"].startswith(f"{public_url}/alerts/")
    finally:
        stop_process(collector)


def shipped_nats_node(directory: Path) -> Path:
    """config/nats-cluster.conf with its sign-in as shipped, on free loopback ports in
    ``directory``: one node (its route block, which names the compose hosts, left out; its
    gateway's streams on that one node)."""
    text = (ROOT / "config" / "nats-cluster.conf").read_text()
    text = text.replace("0.0.0.0:4222", f"127.0.0.1:{free_port()}")
    text = text.replace("0.0.0.0:8222", f"127.0.0.1:{free_port()}")
    text = text.replace("0.0.0.0:1883", f"127.0.0.1:{free_port()}")
    text = text.replace('"/data"', f'"{directory}/data"')
    text = text.replace("stream_replicas: 3", "stream_replicas: 1")
    text = text[: text.index("cluster {")]
    conf = directory / "node.conf"
    conf.write_text(text)
    return conf


def test_the_shipped_nats_nodes_admit_the_collector_and_no_one_else(tmp_path: Path) -> None:
    """The compose cluster's nodes as they start: without SMARTUNIT_NATS_PASSWORD they do
    not start at all; with it, their gateways refuse anyone but the collectors."""
    services = yaml.safe_load(
        compose_config({**COMPOSE_SECRETS, "SMARTUNIT_NATS_PASSWORD": "n"}, "cluster").stdout
    )["services"]
    # the entrypoint as the container runs it ("$$" is compose's escape for "$")
    shell, flag, script, name = services["nats-1"]["entrypoint"]
    script = script.replace("$$", "$")
    binary = find_binary("nats-server")
    script = script.replace("exec nats-server", f"exec {binary}")
    conf = shipped_nats_node(tmp_path)
    command = [shell, flag, script, name, "-c", str(conf)]
    refused = subprocess.run(
        command, env={"PATH": os.environ["PATH"]}, capture_output=True, text=True, timeout=30
    )
    assert refused.returncode != 0 and "set SMARTUNIT_NATS_PASSWORD" in refused.stderr
    empty = {"PATH": os.environ["PATH"], "SMARTUNIT_NATS_PASSWORD": ""}
    assert subprocess.run(command, env=empty, capture_output=True, timeout=30).returncode != 0

    env = {
        "PATH": os.environ["PATH"],
        "NATS_SERVER_NAME": "nats-1",
        "SMARTUNIT_NATS_PASSWORD": "collectors-secret",
    }
    node = spawn(command, env=env, log_path=tmp_path / "node.log")
    try:
        port = int(re.findall(r"mqtt \{ listen: 127\.0\.0\.1:(\d+)", conf.read_text())[0])
        assert poll(lambda: port_open(port), bool, 30)
        assert not signs_in(port, None, None)
        assert not signs_in(port, "smartunit-collector", "guess")
        assert signs_in(port, "smartunit-collector", "collectors-secret")
    finally:
        stop_process(node)
