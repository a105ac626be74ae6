"""The documentation agrees with the code: the licence, the webhook event types, the
README's links and pictures, and deploy.md's backup command on a running collector."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import tomllib
from pathlib import Path

from collector.alerts.model import EventType
from tests.conftest import poll

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = ROOT / "config" / "registry.example.toml"
PRESETS = ROOT / "config" / "rules.presets.toml"
LICENCE_TITLES = {"Apache-2.0": "Apache License\n\\s*Version 2.0"}


def section(markdown: str, title: str) -> str:
    """The text of a ``## title`` section, up to the next section of its level."""
    start = markdown.index(f"\n## {title}\n")
    end = markdown.find("\n## ", start + 1)
    return markdown[start : end if end > 0 else None]


def test_the_licence_file_is_the_licence_the_package_declares() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]["text"]
    text = (ROOT / "LICENSE").read_text()
    assert re.search(LICENCE_TITLES[declared], text[:500]), f"LICENSE is not {declared}"


def test_webhooks_md_lists_every_event_type_the_service_emits() -> None:
    table = section((ROOT / "docs" / "webhooks.md").read_text(), "Event types")
    listed = re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.MULTILINE)
    assert sorted(listed) == sorted(e.value for e in EventType)
    assert len(listed) == len(set(listed))


def local_links(markdown: Path) -> list[str]:
    targets = re.findall(r"\]\(([^)\s]+)\)", markdown.read_text())
    return [t.split("#")[0] for t in targets if not re.match(r"[a-z]+:", t) and t[0] != "#"]


def test_the_readme_and_docs_link_to_files_that_exist() -> None:
    broken = []
    for markdown in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in local_links(markdown):
            if target and not (markdown.parent / target).exists():
                broken.append(f"{markdown.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_the_readme_describes_the_product_not_its_history() -> None:
    text = (ROOT / "README.md").read_text()
    history = re.findall(r"(?i)\b(issue #?\d+|previously|now fixed|used to|no longer)\b", text)
    assert not history, history


def alert_count(database: Path) -> int:
    if not database.exists():
        return 0
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT count(*) FROM alerts").fetchone()[0])


def test_deploy_md_backs_up_a_running_collectors_alert_database(
    make_settings, run_collector, publisher, tmp_path: Path
) -> None:
    """The backup command of deploy.md, word for word but for its paths, copies the alert
    database of a collector that is running and writing: a whole, consistent copy."""
    settings = make_settings(REGISTRY, detection={"rules": [PRESETS]})
    run_collector(settings)
    database = settings.alerts.sqlite_file(settings.data_dir)
    publisher.publish("smartunit/v1/fire/fire-hg-smoke-01/data", json.dumps({"smoke": 1}))
    assert poll(lambda: alert_count(database), bool), "no alert opened"
    deploy = (ROOT / "docs" / "deploy.md").read_text()
    (command,) = [
        line for line in deploy.splitlines() if line.startswith("sqlite3 ") and ".backup" in line
    ]
    backups = tmp_path / "backups"
    backups.mkdir()
    command = command.replace("/var/lib/smartunit/alerts.db", str(database))
    command = command.replace("/var/backups/smartunit", str(backups))
    subprocess.run(["bash", "-c", command], check=True)
    (copy,) = backups.glob("alerts-*.db")
    with sqlite3.connect(copy) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert alert_count(copy) >= 1
