"""The callback API: dispatch systems and the console act on alerts over HTTP.

``/api/*`` needs ``Authorization: Bearer <token>`` (one token per integration, see
``http.tokens``): no or malformed credentials get 401, an unknown token 403, and neither
changes anything. Actions are idempotent (acknowledging twice records one
acknowledgement) and answer 409 when the alert's state forbids them. ``/healthz`` and
``/metrics`` (Prometheus text format) are open; the OpenAPI description is at
``/openapi.json``.
"""

# No "from __future__ import annotations" here: FastAPI reads the route signatures at
# run time, and they name types local to create_app.
import dataclasses
import hmac
import time
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field, SecretStr

from collector.alerts.lifecycle import AlertBook
from collector.alerts.model import Alert, AlertEvent, State, TransitionError


class SilenceRequest(BaseModel):
    unit: str | None = None
    device: str | None = None
    minutes: float = Field(gt=0, le=60 * 24 * 31)
    actor: str = Field(min_length=1, max_length=200)
    reason: str = Field(min_length=1, max_length=4000)


class Action(BaseModel):
    actor: str = Field(min_length=1, max_length=200)
    note: str = Field(default="", max_length=4000)


def _alert_json(alert: Alert, public_url: str) -> dict[str, Any]:
    return {
        **alert.summary(public_url),
        "condition_active": alert.condition_active,
        "acknowledged": alert.acknowledged,
        "flapping": bool(alert.extra.get("flapping")),
        "started_at_ms": alert.started_at_ms,
        "updated_at_ms": alert.updated_at_ms,
    }


def _event_json(event: AlertEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "seq": event.seq,
        "type": event.type.value,
        "at_ms": event.at_ms,
        "actor": event.actor,
        "note": event.note,
        "state": event.state.value,
        "colour": event.colour,
        "value": event.value,
    }


def create_app(
    book: AlertBook,
    tokens: Mapping[str, SecretStr],
    *,
    metrics: Callable[[], dict[str, float]] = dict,
    healthy: Callable[[], bool] = lambda: True,
    public_url: str = "",
) -> FastAPI:
    app = FastAPI(title="SmartUnit Monitor", version="1", description=__doc__)
    known = {name: token.get_secret_value() for name, token in tokens.items()}

    def integration(request: Request) -> str:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HTTPException(
                401, "bearer token required", headers={"WWW-Authenticate": "Bearer"}
            )
        for name, expected in known.items():
            if hmac.compare_digest(token.encode(), expected.encode()):
                return name
        raise HTTPException(403, "unknown token")

    Caller = Annotated[str, Depends(integration)]

    def now_ms() -> int:
        return round(time.time() * 1000)

    def require(alert_id: int) -> Alert:
        alert = book.store.get(alert_id)
        if alert is None:
            raise HTTPException(404, f"no alert {alert_id}")
        return alert

    @app.get("/api/alerts")
    def list_alerts(
        caller: Caller,
        state: Annotated[list[State] | None, Query()] = None,
        colour: str | None = None,
        unit: str | None = None,
        hierarchy: Annotated[str | None, Query(description="prefix: city/district/...")] = None,
    ) -> list[dict[str, Any]]:
        found = book.store.alerts(states=state or [])
        return [
            _alert_json(a, public_url)
            for a in found
            if (colour is None or a.colour == colour)
            and (unit is None or a.unit == unit)
            and (hierarchy is None or "/".join(a.hierarchy.values()).startswith(hierarchy))
        ]

    @app.get("/api/alerts/{alert_id}")
    def get_alert(alert_id: int, caller: Caller) -> dict[str, Any]:
        alert = require(alert_id)
        return {
            **_alert_json(alert, public_url),
            "events": [_event_json(e) for e in book.history(alert_id)],
        }

    def act(name: str, alert_id: int, body: Action, caller: str) -> dict[str, Any]:
        require(alert_id)
        actor = f"{caller}:{body.actor}"
        try:
            if name == "ack":
                events = book.acknowledge(alert_id, actor=actor, note=body.note, now_ms=now_ms())
            elif name == "resolve":
                events = book.resolve(alert_id, actor=actor, note=body.note, now_ms=now_ms())
            else:
                events = book.comment(alert_id, actor=actor, note=body.note, now_ms=now_ms())
        except TransitionError as exc:
            raise HTTPException(409, str(exc)) from None
        return {
            "alert": _alert_json(require(alert_id), public_url),
            "events": [_event_json(e) for e in events],
        }

    @app.post("/api/alerts/{alert_id}/ack")
    def acknowledge(alert_id: int, body: Action, caller: Caller) -> dict[str, Any]:
        return act("ack", alert_id, body, caller)

    @app.post("/api/alerts/{alert_id}/resolve")
    def resolve(alert_id: int, body: Action, caller: Caller) -> dict[str, Any]:
        return act("resolve", alert_id, body, caller)

    @app.post("/api/alerts/{alert_id}/comment")
    def comment(alert_id: int, body: Action, caller: Caller) -> dict[str, Any]:
        return act("comment", alert_id, body, caller)

    @app.post("/api/silences")
    def add_silence(body: SilenceRequest, caller: Caller) -> dict[str, Any]:
        start = now_ms()
        try:
            silence = book.silence(
                unit=body.unit,
                device=body.device,
                starts_ms=start,
                ends_ms=start + round(body.minutes * 60_000),
                actor=f"{caller}:{body.actor}",
                reason=body.reason,
            )
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        return dataclasses.asdict(silence)

    @app.get("/api/silences")
    def list_silences(caller: Caller) -> list[dict[str, Any]]:
        return [dataclasses.asdict(s) for s in book.store.silences(now_ms())]

    @app.get("/healthz")
    def health() -> dict[str, str]:
        if not healthy():
            raise HTTPException(503, "not connected")
        return {"status": "ok"}

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus() -> str:
        lines = []
        typed: set[str] = set()
        for key, value in sorted(metrics().items()):
            name = "smartunit_" + key.replace(".", "_").replace("-", "_")
            family = name.partition("{")[0]
            if family not in typed:  # one TYPE line per family, before its samples
                typed.add(family)
                kind = "counter" if family.endswith("_total") else "gauge"
                lines.append(f"# TYPE {family} {kind}")
            lines.append(f"{name} {value}")
        return "\n".join(lines) + "\n"

    return app
