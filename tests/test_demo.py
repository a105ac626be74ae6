"""`smartunit demo` shows readings arriving in InfluxDB, and Ctrl-C leaves no process behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


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
