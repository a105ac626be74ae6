"""The shipped deployment files: a valid compose file, broker configs that do not drop, and
the local servers' CPU priority."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import yaml

from collector.localservices import InfluxDB, Mosquitto

ROOT = Path(__file__).resolve().parent.parent


COMPOSE_SECRETS = {
    "SMARTUNIT_INFLUX_TOKEN": "t",
    "INFLUXDB_PASSWORD": "p",
    "GRAFANA_PASSWORD": "g",
    "SMARTUNIT_API_TOKEN": "a",
}


def compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose (Debian package) is installed by scripts/install-deps.sh"
    return subprocess.run(
        [binary, "-f", str(ROOT / "docker-compose.yml"), "config"],
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
    # a missing secret stops the stack instead of starting it with a default
    missing = compose_config({k: v for k, v in COMPOSE_SECRETS.items() if k != "INFLUXDB_PASSWORD"})
    assert missing.returncode != 0 and "INFLUXDB_PASSWORD" in missing.stderr


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


def test_the_local_influxdb_yields_the_cpu_to_the_collector(influxdb: InfluxDB) -> None:
    assert influxdb.proc is not None and influxdb.cpu_nice > 0
    proc = Path(f"/proc/{influxdb.proc.pid}")
    threads = [t / "stat" for t in (proc / "task").iterdir()]
    # field 19 of stat is the nice value; the command name before it may hold spaces
    nices = {int(t.read_text().rsplit(")", 1)[1].split()[16]) for t in threads}
    assert nices == {influxdb.cpu_nice}  # every thread, the ones started later too
    autogroup_on = Path("/proc/sys/kernel/sched_autogroup_enabled")
    if autogroup_on.exists() and autogroup_on.read_text().strip() == "1":
        # nice ranks threads only inside a scheduling group: its own group is lowered too
        assert (proc / "autogroup").read_text().split()[-1] == str(influxdb.cpu_nice)
