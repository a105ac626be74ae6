"""The alert console in a real headless Chromium, driven by Playwright, on a running collector.

A gas sensor reports until its level-2 alarm opens; an operator signs in, sees the alert
in red, acknowledges it with a click and sees the new state; the alert page shows the
timeline and the chart of the series from InfluxDB. Screenshots go to the test's
directory, and also to ``$SMARTUNIT_SCREENSHOT_DIR`` when set (how docs/img is made).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from tests.test_alerts_e2e import Sensor, wait_for
from tests.test_detection_e2e import PRESETS, REGISTRY

CHROMIUM = "/usr/bin/chromium"
TOKEN = "tok-console"
# As root in a sandbox without a network: no sandbox, and nothing that phones home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def browser_driver() -> Any:
    """Playwright's sync API. It is a dev dependency and CI installs Debian's chromium
    (scripts/install-deps.sh): under CI a missing one fails the test, never skips it (a
    skipped browser test would pass every change to the console unchecked)."""
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        from playwright import sync_api

        return sync_api
    return pytest.importorskip("playwright.sync_api")


def test_under_ci_a_missing_browser_driver_fails_the_test_instead_of_skipping_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "playwright", None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, "playwright.sync_api", None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(ImportError):
        browser_driver()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):  # a developer's machine without it
        browser_driver()


def keep(screenshot: Path) -> None:
    target = os.environ.get("SMARTUNIT_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, Path(target) / screenshot.name)


def reveal(page: Any, alert_id: int) -> Any:
    """The alert's row, its incident opened if it is one of the incident's other alerts."""
    row = page.locator(f'tr[data-alert="{alert_id}"]')
    row.wait_for(state="attached", timeout=15_000)
    if row.is_hidden():
        leader = row.get_attribute("data-incident")
        page.click(f'button.expand[data-incident="{leader}"]')
    row.wait_for(timeout=10_000)
    return row


def console_collector(
    make_settings,
    run_collector,
    tmp_path: Path,
    *,
    registry_text: str = REGISTRY,
    token: str = TOKEN,
    alerts: dict[str, Any] | None = None,
):
    """A collector on a chemical-park registry, its presets quick (1 s), a console ``token``
    (and ``alerts`` settings, if given): the collector, its settings, the console's
    address, an API client with that token."""
    assert Path(CHROMIUM).exists(), "Debian's chromium is installed by scripts/install-deps.sh"
    registry = tmp_path / "registry.toml"
    registry.write_text(registry_text)
    rules = tmp_path / "rules.toml"
    rules.write_text(PRESETS.read_text().replace("for_s = 5.0", "for_s = 1.0"))
    settings = make_settings(
        registry,
        detection={"rules": [rules], "statistical": None},
        http={"tokens": {"console": SecretStr(token)}},
        alerts=alerts or {},
    )
    collector = run_collector(settings)
    base = f"http://127.0.0.1:{settings.http.port}"
    client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"})
    return collector, settings, base, client


@pytest.mark.slow
def test_an_operator_acknowledges_an_alert_with_a_click(
    make_settings, run_collector, publisher, tmp_path: Path
) -> None:
    sync_api = browser_driver()
    collector, _, base, client = console_collector(make_settings, run_collector, tmp_path)

    sensor = Sensor(publisher, "smartunit/v1/chem/gas-1/data", "lel_pct")
    try:
        sensor.value = 2
        time.sleep(3.0)  # some normal history for the chart
        sensor.value = 57

        def red() -> list:
            return [a for a in client.get("/api/alerts", params={"colour": "red"}).json()]

        (alert,) = wait_for(red)
        alert_id = alert["id"]

        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1600, "height": 900})
            page.goto(base + "/")
            page.fill("#login-actor", "duty officer Li")
            page.fill("#login-token", TOKEN)
            page.click("#login-submit")

            row = reveal(page, alert_id)
            assert "c-red" in (row.locator("td.bar").get_attribute("class") or "")
            state = row.locator("td.state").get_attribute("data-state")
            assert state in ("open", "dispatched")
            page.locator('nav#tree li[data-unit="xinghua"] .dot.c-red').wait_for()
            page.screenshot(path=tmp_path / "console.png")
            keep(tmp_path / "console.png")

            page.click(f'button[data-ack="{alert_id}"]')
            page.wait_for_function(
                "id => document.querySelector(`tr[data-alert='${id}'] td.state`)"
                "?.dataset.state === 'acknowledged'",
                arg=alert_id,
                timeout=10_000,
            )

            row.click()  # the alert page: timeline and the chart from InfluxDB
            page.locator("#alert-state").wait_for()
            page.locator("#chart svg polyline").wait_for(timeout=10_000)
            assert page.locator("#alert-state").get_attribute("data-state") == "acknowledged"
            assert page.locator('#timeline .type[data-type="acknowledged"]').count() == 1
            page.screenshot(path=tmp_path / "console-alert.png", full_page=True)
            keep(tmp_path / "console-alert.png")
            browser.close()
    finally:
        sensor.close()

    events = client.get(f"/api/alerts/{alert_id}").json()["events"]
    (ack,) = [e for e in events if e["type"] == "acknowledged"]
    assert ack["actor"] == "console:duty officer Li"  # the token's name, then the person
    series = client.get(f"/api/alerts/{alert_id}/series", params={"before_s": 30}).json()
    values = [v for _, v in series["points"]]  # per-second means of 5 Hz readings
    assert min(values) == 2.0 and max(values) == 57.0
    assert series["threshold"] == 50.0
    collector.stop()
