"""`smartunit cluster-demo`: three NATS nodes, PostgreSQL, InfluxDB and three collectors on
this machine; readings arrive, an alert opens and every console shows it, and Ctrl-C leaves
no process running and no port open."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from collector.registry import Registry
from fieldtools.brokerauth import OBSERVER_USER
from fieldtools.postgres import postgres_installed
from tests.conftest import poll
from tests.test_demo import ACTIVE_STATES, ROOT, Output
from tests.test_deploy_files import signs_in

pytestmark = pytest.mark.slow


def descendants(root: int) -> dict[int, str]:
    """Every process below ``root``: pid -> its start time (which tells a reused pid)."""
    children: dict[int, list[int]] = {}
    started: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
        started[int(entry)] = fields[19]
    found: dict[int, str] = {}
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = started[child]
            todo.append(child)
    return found


def still_running(processes: dict[int, str]) -> list[str]:
    alive = []
    for pid, started in processes.items():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[19] == started and fields[0] != "Z":
            alive.append(f"{pid}: {Path(f'/proc/{pid}/cmdline').read_bytes()!r}")
    return alive


def listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_the_cluster_demo_stores_readings_opens_an_alert_and_ctrl_c_stops_everything(
    tmp_path: Path,
) -> None:
    if not postgres_installed():
        pytest.skip("PostgreSQL is not installed (Debian's postgresql): run make deps")
    token = "cluster-demo-token"
    workdir = tmp_path / "cluster"
    command = [sys.executable, "-m", "collector.cli", "cluster-demo", "--workdir", str(workdir)]
    demo = subprocess.Popen(
        [*command, "--devices", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "SMARTUNIT_API_TOKEN": token},
    )
    output = Output(demo)
    try:
        live = poll(
            lambda: [int(n) for n in re.findall(r"\+(\d+) since last", output.text())],
            any,
            timeout_s=240,
        )
        assert any(live), output.text()
        consoles = re.findall(r"Console \d\s+(http://\S+)/", output.text())
        assert len(consoles) == 3, output.text()
        registered = set(Registry.load(ROOT / "config" / "registry.example.toml").units)

        def active(console: str) -> set[int]:
            try:
                answer = httpx.get(
                    f"{console}/api/alerts",
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=5,
                )
                alerts: list[dict[str, Any]] = answer.json()
            except (httpx.TransportError, ValueError):
                return set()
            return {
                a["id"] for a in alerts if a["unit"] in registered and a["state"] in ACTIVE_STATES
            }

        opened = poll(lambda: active(consoles[0]), bool, timeout_s=120, every_s=1)
        assert opened, output.text()
        # one shared alert state: every instance's console shows the alert
        for console in consoles[1:]:
            assert opened <= poll(lambda c=console: active(c), opened.issubset, 30), console
        assert "export SMARTUNIT_CONFIG=" in output.text()
        assert "SMARTUNIT_ALERTS_STORE=postgresql://" in output.text()

        banner = output.text()
        # the gateways take signed-in users only: the demo's, listed in its credentials
        gateway = int(re.findall(r"MQTT gateways:\s+mqtt://127\.0\.0\.1:(\d+)", banner)[0])
        assert not signs_in(gateway, None, None)
        credentials = workdir / "nats" / "credentials.txt"
        assert str(credentials) in banner and credentials.stat().st_mode & 0o077 == 0
        observer, password = credentials.read_text().splitlines()[-1].split()
        assert observer == OBSERVER_USER and password in banner  # the watch command's
        assert signs_in(gateway, observer, password)
        ports = {int(p) for p in re.findall(r"(?:http|nats|mqtt|postgresql)://\S*?:(\d+)", banner)}
        children = descendants(demo.pid)
        # 3 NATS nodes, PostgreSQL, InfluxDB, 3 collectors, 3 simulators (and their children)
        assert len(children) >= 11, children
        assert len(ports) >= 12, banner  # 3 consoles, 3 + 3 NATS, PostgreSQL, InfluxDB...
    finally:
        demo.send_signal(signal.SIGINT)  # what Ctrl-C sends
        demo.wait(timeout=120)
    assert demo.returncode == 0, output.text()
    assert "cluster demo stopped; no process left running" in output.text()
    assert still_running(children) == []
    assert [port for port in sorted(ports) if listening(port)] == []
