"""The callback API on a running collector: tokens, actions, history, health, metrics."""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from tests.test_api_unit import open_red_gas
from tests.test_detection_e2e import REGISTRY


@pytest.fixture
def api(make_settings, run_collector, tmp_path: Path):
    registry = tmp_path / "registry.toml"
    registry.write_text(REGISTRY)
    settings = make_settings(
        registry,
        http={"tokens": {"hotline": SecretStr("tok-hotline"), "console": SecretStr("tok-console")}},
    )
    collector = run_collector(settings)
    book = collector.collector.alerts
    alert_id = open_red_gas(book)
    base = f"http://127.0.0.1:{settings.http.port}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{base}/healthz", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.05)
    yield base, alert_id, book
    collector.stop()


def as_(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.slow
def test_callbacks_need_a_known_token_and_change_nothing_without(api) -> None:
    base, alert_id, book = api
    body = {"actor": "intruder", "note": "x"}
    assert httpx.post(f"{base}/api/alerts/{alert_id}/ack", json=body).status_code == 401
    assert (
        httpx.post(
            f"{base}/api/alerts/{alert_id}/ack", json=body, headers={"Authorization": "Basic abc"}
        ).status_code
        == 401
    )
    assert (
        httpx.post(
            f"{base}/api/alerts/{alert_id}/resolve", json=body, headers=as_("wrong")
        ).status_code
        == 403
    )
    assert httpx.get(f"{base}/api/alerts", headers=as_("wrong")).status_code == 403
    assert [e.type.value for e in book.history(alert_id)] == ["opened"]


@pytest.mark.slow
def test_acknowledge_resolve_and_comment_through_the_api(api) -> None:
    base, alert_id, _ = api
    hotline = as_("tok-hotline")
    ack = httpx.post(
        f"{base}/api/alerts/{alert_id}/ack",
        json={"actor": "operator-12", "note": "team sent"},
        headers=hotline,
    )
    assert ack.status_code == 200
    assert ack.json()["alert"]["state"] == "acknowledged"
    again = httpx.post(
        f"{base}/api/alerts/{alert_id}/ack", json={"actor": "operator-12"}, headers=hotline
    )
    assert again.status_code == 200 and again.json()["events"] == []  # idempotent
    httpx.post(
        f"{base}/api/alerts/{alert_id}/comment",
        json={"actor": "desk", "note": "photos attached"},
        headers=as_("tok-console"),
    )
    resolved = httpx.post(
        f"{base}/api/alerts/{alert_id}/resolve",
        json={"actor": "operator-12", "note": "leak sealed"},
        headers=hotline,
    )
    assert resolved.json()["alert"]["state"] == "resolved"

    detail = httpx.get(f"{base}/api/alerts/{alert_id}", headers=hotline).json()
    assert [(e["type"], e["actor"]) for e in detail["events"]] == [
        ("opened", "system"),
        ("acknowledged", "hotline:operator-12"),
        ("commented", "console:desk"),
        ("resolved", "hotline:operator-12"),
    ]
    listed = httpx.get(
        f"{base}/api/alerts", params={"state": "resolved", "colour": "red"}, headers=hotline
    ).json()
    assert [a["id"] for a in listed] == [alert_id]
    assert httpx.get(f"{base}/api/alerts", params={"state": "open"}, headers=hotline).json() == []
    assert httpx.get(f"{base}/api/alerts/999", headers=hotline).status_code == 404


@pytest.mark.slow
def test_health_metrics_and_openapi(api) -> None:
    base, _, _ = api
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
    metrics = httpx.get(f"{base}/metrics").text
    assert "smartunit_messages_received_total" in metrics
    assert 'smartunit_alert_events_total{type="opened"} 1.0' in metrics
    # what a Prometheus server makes of it: typed families, labelled samples
    families = {f.name: f for f in text_string_to_metric_families(metrics)}
    assert families["smartunit_messages_received"].type == "counter"
    assert families["smartunit_inbox_messages"].type == "gauge"
    (opened,) = [
        s for s in families["smartunit_alert_events"].samples if s.labels == {"type": "opened"}
    ]
    assert opened.value == 1
    (written,) = families["smartunit_lines_written"].samples
    assert not math.isnan(written.value)
    spec = httpx.get(f"{base}/openapi.json").json()
    assert "/api/alerts/{alert_id}/ack" in spec["paths"]


@pytest.mark.slow
def test_maintenance_windows_through_the_api(api) -> None:
    base, _, _ = api
    body = {"unit": "xinghua", "minutes": 90, "actor": "park-ops", "reason": "detector swap"}
    assert httpx.post(f"{base}/api/silences", json=body).status_code == 401
    created = httpx.post(f"{base}/api/silences", json=body, headers=as_("tok-console"))
    assert created.status_code == 200
    assert created.json()["actor"] == "console:park-ops"
    listed = httpx.get(f"{base}/api/silences", headers=as_("tok-hotline")).json()
    assert [(s["unit"], s["reason"]) for s in listed] == [("xinghua", "detector swap")]
    both = {"unit": "u", "device": "d", "minutes": 5, "actor": "a", "reason": "r"}
    assert (
        httpx.post(f"{base}/api/silences", json=both, headers=as_("tok-console")).status_code == 422
    )


@pytest.mark.slow
def test_silences_name_a_unit_device_or_gateway_of_the_registry(api) -> None:
    base, _, _ = api
    console = as_("tok-console")
    window = {"minutes": 5, "actor": "park-ops", "reason": "works"}
    for target in ({"unit": "xinghau"}, {"device": "gas-9"}, {"unit": "_unregistered"}):
        refused = httpx.post(f"{base}/api/silences", json={**target, **window}, headers=console)
        assert refused.status_code == 422, target
        assert "registry" in refused.text
    for target in ({"unit": "xinghua"}, {"device": "gas-1"}, {"device": "gw-1"}):
        created = httpx.post(f"{base}/api/silences", json={**target, **window}, headers=console)
        assert created.status_code == 200, target
    listed = httpx.get(f"{base}/api/silences", headers=console).json()
    assert sorted((s["unit"] or s["device"]) for s in listed) == ["gas-1", "gw-1", "xinghua"]


@pytest.mark.slow
def test_alert_ids_past_int64_are_refused_cleanly(api) -> None:
    base, alert_id, _ = api
    hotline = as_("tok-hotline")
    for bad in (2**63, 2**64, 10**30, 0, -1):
        assert httpx.get(f"{base}/api/alerts/{bad}", headers=hotline).status_code == 422, bad
        acted = httpx.post(f"{base}/api/alerts/{bad}/ack", json={"actor": "a"}, headers=hotline)
        assert acted.status_code == 422, bad
        assert str(bad) not in acted.text  # the input is not echoed
        series = httpx.get(f"{base}/api/alerts/{bad}/series", headers=hotline)
        assert series.status_code == 422, bad
    assert httpx.get(f"{base}/api/alerts/{2**63 - 1}", headers=hotline).status_code == 404
    assert httpx.get(f"{base}/api/alerts/{alert_id}", headers=hotline).status_code == 200


@pytest.mark.slow
def test_actor_names_with_control_or_bidi_characters_are_refused(api) -> None:
    base, alert_id, book = api
    hotline = as_("tok-hotline")
    for actor in ("evil\u202egnp.exe", "a\u200bb", "line\nbreak", "bell\x07", "\u2066x\u2069"):
        for path, extra in (
            (f"/api/alerts/{alert_id}/comment", {"note": "n"}),
            ("/api/silences", {"unit": "xinghua", "minutes": 5, "reason": "r"}),
        ):
            refused = httpx.post(f"{base}{path}", json={"actor": actor, **extra}, headers=hotline)
            assert refused.status_code == 422, (actor, path)
            assert actor not in refused.text and actor not in refused.json()["detail"][0]["msg"]
    bidi_note = {"actor": "desk", "note": "paid \u202e0001"}
    assert (
        httpx.post(
            f"{base}/api/alerts/{alert_id}/comment", json=bidi_note, headers=hotline
        ).status_code
        == 422
    )
    # what people do write stays welcome: other scripts, accents, line breaks in a note
    fine = {"actor": "值班员 Zoë", "note": "阀门已关闭\n第二行\tok"}
    commented = httpx.post(f"{base}/api/alerts/{alert_id}/comment", json=fine, headers=hotline)
    assert commented.status_code == 200
    assert [(e.actor, e.note) for e in book.history(alert_id)][1:] == [
        ("hotline:值班员 Zoë", "阀门已关闭\n第二行\tok")
    ]
    assert httpx.get(f"{base}/api/silences", headers=hotline).json() == []


@pytest.mark.slow
def test_invalid_bodies_are_described_not_echoed(api) -> None:
    base, alert_id, _ = api
    marker = "SECRET-ISH-INPUT-" * 100
    too_long = httpx.post(
        f"{base}/api/alerts/{alert_id}/comment",
        json={"actor": marker, "note": "n"},
        headers=as_("tok-hotline"),
    )
    assert too_long.status_code == 422
    (error,) = too_long.json()["detail"]
    assert error["loc"] == ["body", "actor"] and error["type"] == "string_too_long"
    assert "SECRET-ISH" not in too_long.text
    broken = httpx.post(
        f"{base}/api/silences",
        content=b'{"actor": "' + marker.encode(),
        headers={**as_("tok-hotline"), "Content-Type": "application/json"},
    )
    assert broken.status_code == 422 and "SECRET-ISH" not in broken.text


@pytest.mark.slow
def test_no_page_loads_code_from_elsewhere(api) -> None:
    base, _, _ = api
    assert httpx.get(f"{base}/docs").status_code == 404  # its page would fetch a CDN's scripts
    assert httpx.get(f"{base}/redoc").status_code == 404
    page = httpx.get(f"{base}/")
    assert page.status_code == 200
    links = re.findall(r'(?:src|href)="([^"]*)"', page.text)
    assert links and all(link.startswith("/") and not link.startswith("//") for link in links)
    assert "/api/alerts/{alert_id}/ack" in httpx.get(f"{base}/openapi.json").json()["paths"]


@pytest.mark.slow
def test_the_longest_valid_action_fits_the_body_limit(api) -> None:
    base, alert_id, _ = api
    longest = {"actor": "值" * 200, "note": "阀" * 4000}
    body = json.dumps(longest).encode()  # every character escaped: 6 bytes each
    assert len(body) > 24_000
    commented = httpx.post(
        f"{base}/api/alerts/{alert_id}/comment",
        content=body,
        headers={**as_("tok-hotline"), "Content-Type": "application/json"},
    )
    assert commented.status_code == 200
    over = body + b" " * 32 * 1024  # valid JSON still, but over the limit
    refused = httpx.post(
        f"{base}/api/alerts/{alert_id}/comment",
        content=over,
        headers={**as_("tok-hotline"), "Content-Type": "application/json"},
    )
    assert refused.status_code == 413
