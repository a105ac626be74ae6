#!/usr/bin/env python3
"""Take the README's screenshots from a running ``smartunit demo``.

Starts the demo as its own process (what ``make demo`` runs), waits until its API lists
an open alert on a registered unit, then signs in to the console in headless Chromium
(Playwright, zh-CN) and saves, into docs/img/:

- ``demo-console.png``: the alert list and the unit tree at 1920x1080 (a wall screen);
- ``demo-map.png``: the map, units in their worst colour;
- ``demo-console-1366.png``: the list on a duty desk's 1366x768 screen.

PNGs are written with a 256-colour palette (a third of the size).
Usage: scripts/screenshots.py [--out docs/img] [--wait-s 900]
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from PIL import Image  # with matplotlib, a dev dependency
from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.test_console import CHROMIUM, CHROMIUM_ARGS  # the browser flags of the tests

ROOT = Path(__file__).resolve().parent.parent
CONSOLE_LINE = re.compile(r"Console\s+(http://\S+/)")
PSEUDO_UNIT = "_"  # _unregistered, _fleet, _collector: the service's own units


def start_demo(token: str) -> tuple[subprocess.Popen[str], str]:
    """The demo process and its console's URL, read from its banner."""
    demo = subprocess.Popen(
        [sys.executable, "-m", "collector.cli", "demo"],
        env={**os.environ, "SMARTUNIT_API_TOKEN": token},
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # Ctrl-C here stops this script, which stops the demo
    )
    assert demo.stdout is not None
    for line in demo.stdout:
        print(line, end="", flush=True)
        found = CONSOLE_LINE.search(line)
        if found:
            # its progress lines, read so that a full pipe never blocks it
            threading.Thread(target=demo.stdout.read, daemon=True).start()
            return demo, found.group(1)
    raise SystemExit(f"the demo exited ({demo.wait()}) before printing its console's URL")


def open_alerts(base: str, token: str) -> list[dict[str, Any]]:
    response = httpx.get(
        base + "api/alerts", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    response.raise_for_status()
    return list(response.json())


def wait_for_registered_alert(base: str, token: str, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            alerts = open_alerts(base, token)
        except httpx.HTTPError:
            alerts = []
        if any(not a["unit"].startswith(PSEUDO_UNIT) for a in alerts):
            return
        time.sleep(5)
    raise SystemExit(f"no alert on a registered unit within {wait_s:.0f} s")


def shoot(base: str, token: str, out: Path) -> list[Path]:
    taken = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for width, height, views in ((1920, 1080, ("list", "map")), (1366, 768, ("list",))):
            context = browser.new_context(
                viewport={"width": width, "height": height}, locale="zh-CN"
            )
            page = context.new_page()
            page.goto(base)
            page.fill("#login-actor", "值班员 李")
            page.fill("#login-token", token)
            page.click("#login-submit")
            page.locator("#alerts tbody tr").first.wait_for(timeout=30_000)
            page.evaluate("document.fonts.ready")
            for view in views:
                if view == "map":
                    page.click('#tabs button[data-view="map"]')
                    page.locator("#map g.map-unit").first.wait_for(timeout=15_000)
                name = "demo-map.png" if view == "map" else "demo-console.png"
                if width != 1920:
                    name = "demo-console-1366.png"
                page.wait_for_timeout(1000)  # let the flash of a new red settle
                page.screenshot(path=out / name)
                taken.append(out / name)
            context.close()
        browser.close()
    return taken


def shrink(paths: list[Path]) -> None:
    """A 256-colour palette: the console is flat colour and text, so this loses nothing
    a reader would see, and keeps the repository small."""
    for path in paths:
        with Image.open(path) as image:
            reduced = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        reduced.save(path, optimize=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img", help="directory")
    parser.add_argument(
        "--wait-s",
        type=float,
        default=900.0,
        help="how long to wait for the first alert on a registered unit",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(12)
    demo, base = start_demo(token)
    try:
        wait_for_registered_alert(base, token, args.wait_s)
        taken = shoot(base, token, args.out)
        shrink(taken)
        for path in taken:
            print(f"{path} ({path.stat().st_size // 1024} KiB)")
    finally:
        demo.send_signal(signal.SIGINT)  # the demo stops its servers and children
        try:
            demo.wait(60)
        except subprocess.TimeoutExpired:
            demo.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
