"""The callback API on a running collector: tokens, actions, history, health, metrics."""

from __future__ import annotations

import math
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from collector.detection import DetectionEvent


@pytest.fixture
def api(make_settings, run_collector):
    settings = make_settings(
        http={"tokens": {"hotline": SecretStr("tok-hotline"), "console": SecretStr("tok-console")}}
    )
    collector = run_collector(settings)
    book = collector.collector.alerts
    (opened,) = book.on_detection(
        DetectionEvent(
            "raised",
            "combustible-gas",
            "gas-1",
            "chem",
            "lel_pct",
            "xinghua",
            "red",
            "green",
            55.0,
            round(time.time() * 1000),
        )
    )
    base = f"http://127.0.0.1:{settings.http.port}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{base}/healthz", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.05)
    yield base, opened.alert_id, book
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
    assert 'smartunit_alert_events_total{type="opened"} 1' in metrics
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
