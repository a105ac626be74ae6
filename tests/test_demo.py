"""`smartunit demo` shows readings arriving in InfluxDB, an alert on a registered unit within
its first minute, and Ctrl-C leaves no process behind."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from collector.registry import Registry
from fieldtools.demo import OPENING
from fieldtools.simulate import schedule_problems
from fieldtools.simulator import FAULTY_MESSAGES, build_fleet
from tests.conftest import poll

ROOT = Path(__file__).resolve().parent.parent
ACTIVE_STATES = {"open", "dispatched", "acknowledged", "reopened"}


def processes_mentioning(text: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{pid}: {cmdline}")
    return found


@pytest.mark.slow
def test_demo_shows_readings_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "collector.cli",
            "demo",
            "--workdir",
            str(workdir),
            "--devices",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    arrived, seen = first_readings(demo, timeout_s=90)
    output = "".join(seen)
    assert arrived > 0, output
    assert "mosquitto_sub -p" in output and "influx -port" in output
    assert len(processes_mentioning(str(workdir))) >= 3  # broker, InfluxDB, collector, simulator

    demo.send_signal(signal.SIGINT)  # what Ctrl-C sends
    rest, _ = demo.communicate(timeout=60)
    assert demo.returncode == 0, rest
    assert "no process left running" in rest
    time.sleep(0.5)
    assert processes_mentioning(str(workdir)) == []


def first_readings(demo: subprocess.Popen[str], *, timeout_s: float) -> tuple[int, list[str]]:
    """The demo's first nonzero count of readings in InfluxDB (0 if none came in time),
    and the lines it printed until then."""
    assert demo.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = demo.stdout.readline()
        if not line:
            break
        seen.append(line)
        match = re.match(r"readings in InfluxDB: (\d+)", line)
        if match and int(match.group(1)) > 0:
            return int(match.group(1)), seen
    return 0, seen


class Output:
    """What a process prints, collected line by line as it comes."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        self.lines: list[str] = []
        stdout = process.stdout
        self._reader = threading.Thread(target=lambda: self.lines.extend(stdout), daemon=True)
        self._reader.start()

    def text(self) -> str:
        return "".join(self.lines)

    def search(self, pattern: str) -> re.Match[str] | None:
        return re.search(pattern, self.text(), re.MULTILINE)


@pytest.mark.slow
def test_the_demos_first_minute_shows_an_alert_on_a_registered_unit(tmp_path: Path) -> None:
    token = "demo-first-minute"
    workdir = tmp_path / "demo"
    started = time.monotonic()
    demo = subprocess.Popen(
        [sys.executable, "-m", "collector.cli", "demo", "--workdir", str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "SMARTUNIT_API_TOKEN": token},
    )
    output = Output(demo)
    registered = set(Registry.load(ROOT / "config" / "registry.example.toml").units)
    try:
        console = poll(lambda: output.search(r"Console\s+(http://\S+)/"), bool, timeout_s=60)
        assert console, output.text()
        api = httpx.Client(
            base_url=console.group(1), headers={"Authorization": f"Bearer {token}"}, timeout=5
        )

        def alerts_on_registered_units() -> list[dict[str, Any]]:
            try:
                alerts = api.get("/api/alerts").json()
            except httpx.TransportError:
                return []
            return [a for a in alerts if a["unit"] in registered and a["state"] in ACTIVE_STATES]

        # the promise: within a minute of starting, counted from the start itself
        first_minute_left = max(60 - (time.monotonic() - started), 0)
        found = poll(alerts_on_registered_units, bool, timeout_s=first_minute_left, every_s=1)
        assert found, output.text()

        # every injection is printed with its device and kind
        assert output.search(
            r"injected an anomaly on chem-xh-gas-01 \(unit xinghua-chem\): gas_leak"
        )
        # a faulty message comes now and then, and the collector counts its rejection
        faulty = poll(lambda: output.search(r"injected a faulty message on \S+: (\w+)"), bool, 90)
        assert faulty, output.text()
        reason = FAULTY_MESSAGES[faulty.group(1)]
        counted = f'smartunit_rejections_total{{reason="{reason}"}}'
        assert counted in poll(lambda: api.get("/metrics").text, lambda t: counted in t)

        # the printed export line points the command at the demo's data
        export = output.search(r"^\s*export (.+)$")
        assert export, output.text()
        cli_env = dict(item.split("=", 1) for item in shlex.split(export.group(1)))
        listed = subprocess.run(
            [sys.executable, "-m", "collector.cli", "devices", "--unregistered"],
            env={**os.environ, **cli_env},
            capture_output=True,
            text=True,
            check=False,
        )
        assert listed.returncode == 0, listed.stderr
        assert "sim-cam-0001" in listed.stdout and "chem-xh-gas-01" not in listed.stdout
    finally:
        demo.send_signal(signal.SIGINT)
        demo.wait(timeout=60)
    assert demo.returncode == 0, output.text()
    assert f"its data stays in {workdir}" in output.text()
    assert (workdir / "data").is_dir()


def test_the_demos_opening_names_devices_of_the_shipped_registry() -> None:
    fleet = build_fleet(Registry.load(ROOT / "config" / "registry.example.toml"))
    assert schedule_problems(fleet, OPENING) == []
