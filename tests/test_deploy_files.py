"""The shipped deployment files: a valid compose file and broker configs that do not drop."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

from collector.localservices import Mosquitto

ROOT = Path(__file__).resolve().parent.parent


def test_compose_file_is_valid() -> None:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose (Debian package) is installed by scripts/install-deps.sh"
    done = subprocess.run(
        [binary, "-f", str(ROOT / "docker-compose.yml"), "config"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(done.stdout)
    assert {"mosquitto", "influxdb", "collector", "simulator"} <= set(config["services"])
    mounted = config["services"]["mosquitto"]["volumes"][0]
    source = mounted["source"] if isinstance(mounted, dict) else mounted.split(":")[0]
    assert Path(source).resolve() == ROOT / "config" / "mosquitto.conf"


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
