"""The console as a wall screen in a Suzhou command centre, in headless Chromium (Playwright).

In zh-CN, at 1920x1080 and 1366x768: unit and place names from the registry drawn with a
CJK font; a new red sounds (WebAudio) and flashes, and mute stops the sound only; an
incident's row opens to its alerts; a device the registry does not know is listed apart
from the unit tree as an incident of its own, and its red that cleared before anyone saw
it goes overdue; the alerts acknowledged at once with one note; a silence created from
the page; the map shows every unit with coordinates in its worst colour; resolving an
alert whose readings are still abnormal asks first; and with the API unreachable the page
says so within two refresh intervals, and stops saying so once it is back. Screenshots go
to the test's directory, and to ``$SMARTUNIT_SCREENSHOT_DIR`` when set (how docs/img is
made).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.test_alerts_e2e import Sensor, wait_for
from tests.test_console import (
    CHROMIUM,
    CHROMIUM_ARGS,
    browser_driver,
    console_collector,
    keep,
    reveal,
)

TOKEN = "tok-wall"
REFRESH_S = 5.0  # REFRESH_MS in collector/console/console.js
RED_ACK_DEADLINE_S = 8.0  # short, so that a red nobody acknowledged goes overdue in the test
CJK_FONT = "Noto Sans CJK SC"

REGISTRY = """
[places]
suzhou = "苏州市"
zjg = "张家港市"
park = "扬子江国际化学工业园"
east = "东区"
gusu = "姑苏区"
gq = "观前街道"

[units.xinghua]
name = "兴华化工"
kind = "chem_enterprise"
hierarchy = { city = "suzhou", district = "zjg", street = "park", community = "east", grid = "C1" }
lat = 31.95
lon = 120.43
contact = "值班长 王工 0512-5888 0001"
runbook = "https://runbooks.example/gas-leak"

[units.donghai]
name = "东海化学"
kind = "chem_enterprise"
hierarchy = { city = "suzhou", district = "zjg", street = "park", community = "east", grid = "C2" }
lat = 31.93
lon = 120.47

[units.guanqian-square]
name = "观前街广场"
kind = "square"
hierarchy = { city = "suzhou", district = "gusu", street = "gq", community = "gq", grid = "G7" }
safe_capacity = 1500
lat = 31.311
lon = 120.624

[units.humble-garden]
name = "拙政园"
kind = "tourist_site"
hierarchy = { city = "suzhou", district = "gusu", street = "gq", community = "db", grid = "G8" }

[devices.gas-1]
unit = "xinghua"
family = "chem"

[devices.gas-3]
unit = "xinghua"
family = "chem"

[devices.gas-2]
unit = "donghai"
family = "chem"

[devices.cam-1]
unit = "guanqian-square"
family = "camera"
"""

# Counts every tone the page starts: proof that a new red was played, in a headless browser.
COUNT_TONES = """
window.__tones = 0;
const start = OscillatorNode.prototype.start;
OscillatorNode.prototype.start = function (...args) {
  window.__tones += 1;
  return start.apply(this, args);
};
"""


def platform_fonts(page: Any, selector: str) -> set[str]:
    """The fonts Chromium actually drew a node's text with (not just what CSS asked for)."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("DOM.enable")
    cdp.send("CSS.enable")
    root = cdp.send("DOM.getDocument")["root"]["nodeId"]
    node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
    fonts = cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
    return {f["familyName"] for f in fonts}


def sign_in(page: Any, base: str) -> None:
    page.goto(base + "/")
    page.fill("#login-actor", "值班员 李")
    page.fill("#login-token", TOKEN)
    page.click("#login-submit")
    page.locator('nav#tree li[data-unit="xinghua"]').wait_for(timeout=10_000)


def check_readable(page: Any) -> None:
    """Chinese names from the registry, drawn with a CJK font, and nothing cut off."""
    assert "兴华化工" in page.locator('nav#tree li[data-unit="xinghua"]').inner_text()
    tree = page.locator("nav#tree").inner_text()
    assert "张家港市" in tree and "扬子江国际化学工业园" in tree  # places, not their ids
    assert page.evaluate(f"document.fonts.check('16px \"{CJK_FONT}\"', '兴华化工')")
    assert CJK_FONT in platform_fonts(page, 'nav#tree li[data-unit="xinghua"] > span')
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


@pytest.mark.slow
def test_a_wall_screen_operator_sees_hears_and_acts(
    make_settings, run_collector, publisher, tmp_path: Path
) -> None:
    sync_api = browser_driver()
    collector, settings, base, client = console_collector(
        make_settings,
        run_collector,
        tmp_path,
        registry_text=REGISTRY,
        token=TOKEN,
        alerts={"ack_deadlines_s": {"red": RED_ACK_DEADLINE_S}},
    )

    def reds() -> list[dict[str, Any]]:
        return list(client.get("/api/alerts", params={"colour": "red"}).json())

    gas_1 = Sensor(publisher, "smartunit/v1/chem/gas-1/data", "lel_pct")
    gas_2 = Sensor(publisher, "smartunit/v1/chem/gas-2/data", "lel_pct")
    gas_3 = Sensor(publisher, "smartunit/v1/chem/gas-3/data", "lel_pct")
    stray = Sensor(publisher, "smartunit/v1/chem/stray-9/data", "lel_pct")  # not registered
    try:
        gas_1.value = gas_2.value = gas_3.value = 2
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM,
                args=[*CHROMIUM_ARGS, "--autoplay-policy=no-user-gesture-required"],
            )
            wall = browser.new_context(viewport={"width": 1920, "height": 1080}, locale="zh-CN")
            wall.add_init_script(COUNT_TONES)
            page = wall.new_page()
            sign_in(page, base)  # the city is quiet: the first list is the baseline
            check_readable(page)
            assert page.evaluate("window.__tones") == 0

            # a leak at xinghua seen by two detectors: new reds, heard and seen, one incident
            gas_1.value = gas_3.value = 57
            at_xinghua = wait_for(lambda: len(reds()) >= 2 and reds())
            (first,) = [a for a in at_xinghua if a["device"] == "gas-1"]
            incident = {a["incident"] for a in at_xinghua}
            assert len(incident) == 1  # the unit's incident
            leader = page.locator(f'tr[data-alert="{incident.pop()}"]')
            leader.wait_for(timeout=15_000)
            page.wait_for_function("window.__tones > 0", timeout=10_000)
            page.wait_for_function(
                "document.querySelectorAll('#alerts tbody tr.member[data-colour=red]').length >= 1",
                timeout=15_000,
            )
            members = page.locator("#alerts tbody tr.member")
            assert members.count() >= 1 and all(
                members.nth(i).is_hidden() for i in range(members.count())
            )  # one row for the incident ...
            assert "flash" in (leader.get_attribute("class") or "")
            assert "c-red" in (leader.locator("td.bar").get_attribute("class") or "")
            assert page.evaluate("document.body.classList.contains('alarm')")
            leader.locator("button.expand").click()  # ... that opens to its alerts
            for alert in at_xinghua:
                page.locator(f'tr[data-alert="{alert["id"]}"]').wait_for(timeout=5_000)
            row = reveal(page, first["id"])
            assert "可燃气体 %LEL" in row.inner_text()
            page.screenshot(path=tmp_path / "console-wall.png")
            keep(tmp_path / "console-wall.png")

            # muted: the next red flashes without a sound
            page.click("#mute")
            tones = page.evaluate("window.__tones")
            gas_2.value = 60
            (second,) = wait_for(lambda: [a for a in reds() if a["device"] == "gas-2"])
            page.locator(f'tr[data-incident="{second["incident"]}"].flash').first.wait_for(
                state="attached", timeout=15_000
            )
            assert page.evaluate("window.__tones") == tones

            # a device the registry does not know: apart from the unit tree, an incident of
            # its own; its red clears before anyone saw it, and still goes overdue
            stray.value = 58
            (lost,) = wait_for(lambda: [a for a in reds() if a["device"] == "stray-9"])
            own = [a for a in client.get("/api/alerts").json() if a["incident"] == lost["incident"]]
            assert {a["device"] for a in own} == {"stray-9"} and all(a["unregistered"] for a in own)
            stray.value = 2
            wait_for(lambda: client.get(f"/api/alerts/{lost['id']}").json()["state"] == "recovered")
            item = page.locator('#tree-unregistered li[data-device="stray-9"]')
            item.locator(".dot.c-red").wait_for(timeout=15_000)
            assert page.locator("#unregistered-title").is_visible()
            assert "化工园区" in item.inner_text()  # its family, from its readings
            tree = page.locator("#tree-root").inner_text()
            assert "stray-9" not in tree and "_unregistered" not in tree and "(none)" not in tree
            lost_row = reveal(page, lost["id"])
            assert "未登记设备" in lost_row.locator("td.unit").inner_text()
            lost_row.locator('td.state[data-state="recovered"]').wait_for(timeout=15_000)
            lost_row.locator("td.due .overdue").wait_for(timeout=3 * RED_ACK_DEADLINE_S * 1000)
            assert client.get(f"/api/alerts/{lost['id']}").json()["overdue"] is True
            item.locator("span").first.click()  # picking it shows its alerts alone
            strays = {a["id"] for a in client.get("/api/alerts").json() if a["device"] == "stray-9"}
            page.wait_for_function(
                "ids => [...document.querySelectorAll('#alerts tbody tr:not([hidden])')]"
                ".every((row) => ids.includes(Number(row.dataset.alert)))",
                arg=sorted(strays),
            )
            assert lost_row.is_visible()
            page.screenshot(path=tmp_path / "console-unregistered.png")
            keep(tmp_path / "console-unregistered.png")
            page.fill("#search", "")

            # the map: every unit with coordinates, in its worst colour; the one without listed
            page.click('#tabs button[data-view="map"]')
            units = {u["id"]: u for u in client.get("/api/units").json()}
            placed = [u for u in units.values() if u["lat"] is not None]
            assert len(placed) == 3
            for unit in placed:
                page.locator(
                    f'#map g.map-unit[data-unit="{unit["id"]}"].m-{unit["colour"]}'
                ).wait_for(timeout=10_000)
            assert units["xinghua"]["colour"] == "red"
            assert page.locator('#map g.map-unit[data-unit="humble-garden"]').count() == 0
            assert "1" in page.locator("#map-note").inner_text()
            page.screenshot(path=tmp_path / "console-map.png")
            keep(tmp_path / "console-map.png")
            # where a tile server exists: its tiles under the same projection
            page.fill("#tile-url", "http://127.0.0.1:9/tiles/{z}/{x}/{y}.png")
            page.dispatch_event("#tile-url", "change")
            page.locator("#map svg image").first.wait_for(state="attached", timeout=10_000)
            href = page.locator("#map svg image").first.get_attribute("href") or ""
            assert re.fullmatch(r"http://127\.0\.0\.1:9/tiles/\d+/\d+/\d+\.png", href), href
            page.fill("#tile-url", "")
            page.dispatch_event("#tile-url", "change")

            # bulk acknowledge: every ackable alert on the list, one note
            page.click('#tabs button[data-view="list"]')
            page.locator("#select-all").check()
            page.fill("#bulk-note", "已派巡检组到场")
            page.click("#bulk-ack")
            listed = client.get("/api/alerts").json()
            for alert in listed:  # a leader's acknowledgement covers its incident
                page.locator(
                    f'tr[data-alert="{alert["id"]}"] td.state[data-state="acknowledged"]'
                ).wait_for(state="attached", timeout=10_000)
            for alert in listed:
                events = client.get(f"/api/alerts/{alert['id']}").json()["events"]
                (ack,) = [e for e in events if e["type"] == "acknowledged"]
                assert ack["actor"] == "console:值班员 李"
                if alert["incident"] == alert["id"]:
                    assert ack["note"] == "已派巡检组到场"
            assert "值班员 李" in row.locator("td.handler").inner_text()
            page.wait_for_function("!document.body.classList.contains('alarm')")

            # resolving while the readings are still abnormal asks first; "no" changes nothing
            reveal(page, first["id"]).click()
            page.locator("#alert-state").wait_for()
            assert page.locator('#actions button[data-action="ack"]').is_hidden()
            asked: list[str] = []

            def decline(dialog: Any) -> None:
                asked.append(dialog.message)
                dialog.dismiss()

            page.once("dialog", decline)
            page.click('#actions button[data-action="resolve"]')
            wait_for(lambda: asked)
            assert str(first["id"]) in asked[0]
            assert client.get(f"/api/alerts/{first['id']}").json()["state"] == "acknowledged"
            assert "王工" in page.locator("#alert-facts").inner_text()  # the unit's contact

            # a silence (maintenance window) from the page
            page.goto(base + "/#silences")
            page.locator("#silence-unit option[value='donghai']").wait_for(state="attached")
            page.select_option("#silence-unit", "donghai")
            page.fill("#silence-minutes", "30")
            page.fill("#silence-reason", "探头年检")
            page.click("#silence-create")
            page.locator("#silences li[data-silence]").wait_for(timeout=10_000)
            (silence,) = client.get("/api/silences").json()
            assert silence["unit"] == "donghai" and silence["reason"] == "探头年检"
            assert "东海化学" in page.locator("#silences").inner_text()

            # the smaller screen of a duty desk
            desk = browser.new_context(viewport={"width": 1366, "height": 768}, locale="zh-CN")
            small = desk.new_page()
            sign_in(small, base)
            small.locator(f'tr[data-alert="{first["id"]}"]').wait_for(state="attached")
            check_readable(small)
            small.screenshot(path=tmp_path / "console-1366.png")
            keep(tmp_path / "console-1366.png")
            small.select_option("#lang", "en")  # the English switch, kept for the next visit
            small.wait_for_function("document.documentElement.lang === 'en'")
            small.locator(f'tr[data-alert="{first["id"]}"]').wait_for(state="attached")
            assert small.locator("header h1").inner_text() == "SmartUnit Monitor"
            assert "Acknowledge by" in small.locator("#alerts thead").inner_text()
            desk.close()

            # the API stops answering (the network between wall and collector is cut): a
            # loud banner within two refresh intervals of that moment, gone when it answers
            page.goto(base + "/")
            page.locator(f'tr[data-alert="{first["id"]}"]').wait_for(state="attached")
            assert page.locator("#offline").is_hidden()
            page.route("**/api/**", lambda route: route.abort())
            page.locator("#offline").wait_for(state="visible", timeout=2 * REFRESH_S * 1000)
            page.unroute("**/api/**")
            page.locator("#offline").wait_for(state="hidden", timeout=2 * REFRESH_S * 1000)

            # the collector goes away: the same banner
            collector.stop()
            page.locator("#offline").wait_for(state="visible", timeout=2 * REFRESH_S * 1000)
            assert "失去连接" in page.locator("#offline").inner_text()
            assert "stale" in (page.locator("#updated").get_attribute("class") or "")
            time.sleep(1.5)  # the "n s ago" moves on while nothing arrives
            page.screenshot(path=tmp_path / "console-offline.png")
            keep(tmp_path / "console-offline.png")

            # ... and leaves when it is back
            run_collector(settings)
            page.locator("#offline").wait_for(state="hidden", timeout=3 * REFRESH_S * 1000)
            assert "stale" not in (page.locator("#updated").get_attribute("class") or "")
            browser.close()
    finally:
        for sensor in (gas_1, gas_2, gas_3, stray):
            sensor.close()
