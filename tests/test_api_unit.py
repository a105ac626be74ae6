"""The HTTP API in-process: ``create_app`` over an alert book on a temporary SQLite file,
called through an ASGI transport. No broker, no InfluxDB, no collector: these run in the
fast suite, and tests/test_api.py checks the same surface against a running collector."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from collector.alerts.lifecycle import AlertBook
from collector.alerts.store import SqliteAlertStore
from collector.api import ApiContext, create_app
from collector.clusterview import ClusterView
from collector.config import MqttSettings, Settings
from collector.detection import DetectionEvent

HOTLINE = {"Authorization": "Bearer tok-hotline"}
MAX_BODY = 32 * 1024


def open_red_gas(book: AlertBook) -> int:
    """A red gas alarm on gas-1 raised now: the id of the alert it opens."""
    (opened,) = book.on_detection(red_gas(round(time.time() * 1000)))
    return opened.alert_id


def red_gas(at_ms: int) -> DetectionEvent:
    return DetectionEvent(
        "raised",
        "combustible-gas",
        "gas-1",
        "chem",
        "lel_pct",
        "xinghua",
        "red",
        "green",
        55.0,
        at_ms,
    )


class Client:
    """Synchronous requests to an ASGI app, each through httpx's in-process transport."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                return await client.request(method, url, **kwargs)

        return asyncio.run(send())

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)


@pytest.fixture
def book(tmp_path: Path) -> AlertBook:
    return AlertBook(SqliteAlertStore(tmp_path / "alerts.db"), verify_window_s=300)


@pytest.fixture
def client(book: AlertBook) -> Client:
    context = ApiContext(
        book=book, tokens={"hotline": SecretStr("tok-hotline")}, max_body_bytes=MAX_BODY
    )
    return Client(create_app(context))


@pytest.fixture
def alert_id(book: AlertBook) -> int:
    return open_red_gas(book)


def test_health_is_open_and_answers_ok(client: Client) -> None:
    answer = client.get("/healthz")
    assert answer.status_code == 200 and answer.json() == {"status": "ok"}


def test_health_answers_503_with_each_problem(book: AlertBook) -> None:
    context = ApiContext(book=book, tokens={}, problems=lambda: ["spool nearly full"])
    answer = Client(create_app(context)).get("/healthz")
    assert answer.status_code == 503 and "spool nearly full" in answer.text


def test_no_unknown_or_malformed_token_acts_and_nothing_changes(
    client: Client, book: AlertBook, alert_id: int
) -> None:
    url = f"/api/alerts/{alert_id}/ack"
    assert client.post(url, json={"actor": "a"}).status_code == 401
    malformed = {"Authorization": "Basic dG9rLWhvdGxpbmU="}
    assert client.post(url, json={"actor": "a"}, headers=malformed).status_code == 401
    unknown = {"Authorization": "Bearer tok-stranger"}
    assert client.post(url, json={"actor": "a"}, headers=unknown).status_code == 403
    alert = book.get(alert_id)
    assert alert is not None and not alert.acknowledged

    assert client.post(url, json={"actor": "a"}, headers=HOTLINE).status_code == 200
    alert = book.get(alert_id)
    assert alert is not None and alert.acknowledged


def test_a_body_over_the_limit_is_refused_with_413(client: Client, alert_id: int) -> None:
    over = b'{"actor": "a", "note": "' + b"x" * MAX_BODY + b'"}'
    answer = client.post(
        f"/api/alerts/{alert_id}/comment",
        content=over,
        headers={**HOTLINE, "Content-Type": "application/json"},
    )
    assert answer.status_code == 413
    assert 'smartunit_api_refused_total{status="413"} 1.0' in client.get("/metrics").text


def test_an_invalid_body_is_described_not_echoed(client: Client, alert_id: int) -> None:
    marker = "SECRET-ISH-INPUT-" * 100
    too_long = client.post(
        f"/api/alerts/{alert_id}/comment", json={"actor": marker, "note": "n"}, headers=HOTLINE
    )
    assert too_long.status_code == 422
    (error,) = too_long.json()["detail"]
    assert error["loc"] == ["body", "actor"] and error["type"] == "string_too_long"
    assert "SECRET-ISH" not in too_long.text
    broken = client.post(
        "/api/silences",
        content=b'{"actor": "' + marker.encode(),
        headers={**HOTLINE, "Content-Type": "application/json"},
    )
    assert broken.status_code == 422 and "SECRET-ISH" not in broken.text


def test_alert_ids_past_int64_are_refused_and_unknown_ones_are_404(client: Client) -> None:
    assert client.get(f"/api/alerts/{2**63}", headers=HOTLINE).status_code == 422
    assert client.get(f"/api/alerts/{2**63 - 1}", headers=HOTLINE).status_code == 404


def test_the_cluster_of_an_mqtt_collector_is_itself_alone_and_needs_a_token(
    book: AlertBook,
) -> None:
    settings = Settings(mqtt=MqttSettings(client_id="solo-1"))
    view = ClusterView(settings)
    context = ApiContext(
        book=book, tokens={"hotline": SecretStr("tok-hotline")}, cluster=view.answer
    )
    client = Client(create_app(context))
    assert client.get("/api/cluster").status_code == 401
    answer = client.get("/api/cluster", headers=HOTLINE)
    assert answer.status_code == 200
    cluster = answer.json()
    assert cluster["transport"] == "mqtt" and cluster["partitions"] == []
    assert [each["id"] for each in cluster["instances"]] == ["solo-1"]
    assert cluster["instances"][0]["this"] is True
    assert view.metrics() == {} and view.operator_checks(0) == []
