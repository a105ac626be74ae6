"""Registry reloads: parsed off the event loop, and an emptied file never unregisters the fleet."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from collector.cli import main
from collector.config import RegistrySettings
from collector.errors import ConfigError
from collector.registry import Registry, RegistryHolder
from tests.conftest import influx_rows, poll
from tests.test_ingest_e2e import REGISTRY, topic

NOW = time.time()
CHECKPOINT = "Gusu, Pingjiang = checkpoint"


@pytest.mark.slow
def test_an_emptied_registry_keeps_every_device_registered(
    make_settings, run_collector, publisher, tmp_path: Path
) -> None:
    registry = tmp_path / "registry.toml"
    registry.write_text(REGISTRY)
    settings = make_settings(registry)
    collector = run_collector(settings)

    registry.write_text("")  # an editor's truncation that stays, or a botched deploy
    assert poll(lambda: collector.holder.reload_failures, lambda n: n >= 1, 20, 0.05) >= 1
    assert collector.holder.reloads == 0

    publisher.publish(topic("camera", "cam-1"), json.dumps({"ts": NOW - 30, "people": 7}))
    collector.wait_received(publisher.count + 1)
    rows = influx_rows(settings.influx, 'SELECT * FROM "camera" GROUP BY *')
    assert [(r["people"], r["unit"]) for r in rows] == [(7, CHECKPOINT)]
    assert "cam-1" in collector.holder.current.devices
    collector.stop()


@pytest.mark.slow
def test_registry_is_parsed_off_the_event_loop(
    make_settings, run_collector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = tmp_path / "registry.toml"
    registry.write_text(REGISTRY)
    collector = run_collector(make_settings(registry))
    loop_thread = collector._thread.ident
    loaded_in: list[int] = []
    parse = Registry.load

    def recording_load(path: Path) -> Registry:
        loaded_in.append(threading.get_ident())
        return parse(path)

    monkeypatch.setattr(Registry, "load", recording_load)

    registry.write_text(REGISTRY.replace('grid = "G0410"', 'grid = "G0411"'))
    assert poll(lambda: collector.holder.reloads, lambda n: n >= 1, 20, 0.05) == 1
    # An operator's request (SIGHUP) reloads at once, also off the loop.
    registry.write_text(REGISTRY.replace('grid = "G0410"', 'grid = "G0412"'))
    assert collector._loop is not None
    collector._loop.call_soon_threadsafe(collector.holder.request_reload)
    assert poll(lambda: collector.holder.reloads, lambda n: n >= 2, 20, 0.05) == 2

    assert collector.holder.current.units["lot-p2"].hierarchy.grid == "G0412"
    assert len(loaded_in) == 2
    assert loop_thread not in loaded_in
    collector.stop()


def test_an_empty_registry_is_refused_unless_allowed(tmp_path: Path) -> None:
    path = tmp_path / "registry.toml"
    path.write_text("# every device moved elsewhere\n")
    with pytest.raises(ConfigError, match="allow_empty"):
        RegistryHolder.open(RegistrySettings(path=path))
    config = tmp_path / "smartunit.toml"
    config.write_text(f'[registry]\npath = "{path}"\n')
    assert main(["check-config", str(config)]) == 2

    path.write_text(REGISTRY)
    holder = RegistryHolder.open(RegistrySettings(path=path, allow_empty=True))
    path.write_text("")
    assert holder.reload_now() is True
    assert holder.current.devices == {}
    config.write_text(f'[registry]\npath = "{path}"\nallow_empty = true\n')
    assert main(["check-config", str(config)]) == 0
