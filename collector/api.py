"""The callback API: dispatch systems and the console act on alerts over HTTP.

``/api/*`` needs ``Authorization: Bearer <token>`` (one token per integration, see
``http.tokens``): no or malformed credentials get 401, an unknown token 403, and neither
changes anything. Actions are idempotent (acknowledging twice records one
acknowledgement) and answer 409 when the alert's state forbids them. ``/healthz`` and
``/metrics`` (Prometheus text format) are open; the OpenAPI description is at
``/openapi.json`` (no interactive ``/docs``: its page would load scripts from a CDN).

Credentials and the body's size are checked before the body is read (collector.apiguard);
a refused or invalid request is answered without echoing what it sent.
"""

# No "from __future__ import annotations" here: FastAPI reads the route signatures at
# run time, and they name types local to create_app.
import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import AfterValidator, BaseModel, Field, SecretStr

from collector.alerts.lifecycle import AlertBook
from collector.alerts.model import (
    ACTIVE_STATES,
    Alert,
    AlertEvent,
    State,
    ack_due_at_ms,
    worst_level,
)
from collector.apiguard import Refused, RequestGuard, Tokens
from collector.errors import StoreError, TransitionError
from collector.metrics import CONTENT_TYPE, Exposition, Value
from collector.plaintext import check_name, check_text
from collector.registry import UNREGISTERED_UNIT, Registry
from collector.snapshots import unit_states
from detectors.levels import COLOURS

CONSOLE = Path(__file__).resolve().parent / "console"

# Alert ids are SQLite integers: anything past int64 can name no alert.
AlertId = Annotated[int, PathParam(ge=1, le=2**63 - 1)]

ActorName = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(check_name)]
Identifier = Annotated[str, Field(min_length=1, max_length=200)]


class SilenceRequest(BaseModel):
    unit: Identifier | None = None
    device: Identifier | None = None
    minutes: float = Field(gt=0, le=60 * 24 * 31)
    actor: ActorName
    reason: Annotated[str, Field(min_length=1, max_length=4000), AfterValidator(check_text)]


class Action(BaseModel):
    actor: ActorName
    note: Annotated[str, Field(max_length=4000), AfterValidator(check_text)] = ""


@dataclass(frozen=True, kw_only=True)
class ApiContext:
    """What the API serves from: the alert book and views of the running collector."""

    book: AlertBook
    tokens: Mapping[str, SecretStr]
    public_url: str = ""
    metrics: Callable[[], Mapping[str, Value]] = dict
    receivers: Callable[[], list[dict[str, Any]]] = list  # each webhook receiver's health
    healthy: Callable[[], bool] = lambda: True
    problems: Callable[[], list[str]] = list  # each makes /healthz answer 503 with it
    registry: Callable[[], Registry] = Registry.empty
    # (family, device, quantity, start_ms, end_ms) -> [(time_ms, value)], from InfluxDB
    series: Callable[[str, str, str, int, int], list[tuple[int, float]]] | None = None
    # instances, partitions, owners, lag (collector/clusterview.py)
    cluster: Callable[[], dict[str, Any]] = lambda: {"instances": [], "partitions": []}
    ack_deadlines_s: Mapping[Any, float] = field(default_factory=dict)
    max_body_bytes: int = 32 * 1024
    body_timeout_s: float = 10.0

    def alert_json(self, alert: Alert) -> dict[str, Any]:
        due = ack_due_at_ms(alert, self.ack_deadlines_s)
        return {
            **alert.summary(self.public_url),
            "condition_active": alert.condition_active,
            "acknowledged": alert.acknowledged,
            "flapping": alert.flapping,
            "acknowledged_by": alert.acknowledged_by,
            "peak": alert.peak,
            "started_at_ms": alert.started_at_ms,
            "updated_at_ms": alert.updated_at_ms,
            "ack_due_at_ms": due,
            "overdue": due is not None and time.time() * 1000 >= due,
            # raised for a device the registry did not know: an incident of its own
            "unregistered": alert.unit == UNREGISTERED_UNIT,
        }


def _within(hierarchy: Mapping[str, str], prefix: str) -> bool:
    """Whether a unit's city/district/... path lies under ``prefix``, segment by segment."""
    path = "/".join(hierarchy.values())
    prefix = prefix.strip("/")
    return not prefix or path == prefix or path.startswith(prefix + "/")


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


def _known_to(registry: Registry, *, unit: str | None, device: str | None) -> bool:
    """Whether a silence names a unit, device or gateway of the registry."""
    if unit is not None:
        return unit in registry.units
    return device in registry.devices or any(d.gateway == device for d in registry.devices.values())


def create_app(context: ApiContext) -> FastAPI:
    book = context.book
    app = FastAPI(
        title="SmartUnit Monitor",
        version="1",
        description=__doc__,
        docs_url=None,
        redoc_url=None,
    )
    tokens = Tokens({name: token.get_secret_value() for name, token in context.tokens.items()})
    refused: Counter[int] = Counter()
    app.add_middleware(
        RequestGuard,
        tokens=tokens,
        max_body_bytes=context.max_body_bytes,
        body_timeout_s=context.body_timeout_s,
        refused=refused,
    )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # where and why, never the input: it is the caller's own, and may be large
        detail = [
            {
                "loc": [str(part)[:100] for part in error.get("loc", ())],
                "msg": str(error.get("msg", ""))[:200],
                "type": str(error.get("type", "")),
            }
            for error in exc.errors()[:20]
        ]
        return JSONResponse({"detail": detail}, status_code=422)

    def integration(request: Request) -> str:
        try:
            return tokens.caller(request.headers.get("Authorization", ""))
        except Refused as refused:
            raise HTTPException(refused.status, refused.detail, refused.headers) from None

    Caller = Annotated[str, Depends(integration)]

    def now_ms() -> int:
        return round(time.time() * 1000)

    def require(alert_id: int) -> Alert:
        alert = book.get(alert_id)
        if alert is None:
            raise HTTPException(404, f"no alert {alert_id}")
        return alert

    @app.get("/api/alerts")
    def list_alerts(  # noqa: PLR0917 - FastAPI: each filter is a query parameter
        caller: Caller,
        state: Annotated[list[State] | None, Query()] = None,
        colour: str | None = None,
        unit: str | None = None,
        family: str | None = None,
        hierarchy: Annotated[str | None, Query(description="prefix: city/district/...")] = None,
    ) -> list[dict[str, Any]]:
        found = book.find(states=state or [])
        return [
            context.alert_json(a)
            for a in found
            if (colour is None or a.colour == colour)
            and (unit is None or a.unit == unit)
            and (family is None or a.family == family)
            and (hierarchy is None or _within(a.hierarchy, hierarchy))
        ]

    @app.get("/api/alerts/{alert_id}")
    def get_alert(alert_id: AlertId, caller: Caller) -> dict[str, Any]:
        alert = require(alert_id)
        return {
            **context.alert_json(alert),
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
            "alert": context.alert_json(require(alert_id)),
            "events": [_event_json(e) for e in events],
        }

    @app.post("/api/alerts/{alert_id}/ack")
    def acknowledge(alert_id: AlertId, body: Action, caller: Caller) -> dict[str, Any]:
        return act("ack", alert_id, body, caller)

    @app.post("/api/alerts/{alert_id}/resolve")
    def resolve(alert_id: AlertId, body: Action, caller: Caller) -> dict[str, Any]:
        return act("resolve", alert_id, body, caller)

    @app.post("/api/alerts/{alert_id}/comment")
    def comment(alert_id: AlertId, body: Action, caller: Caller) -> dict[str, Any]:
        return act("comment", alert_id, body, caller)

    @app.post("/api/silences")
    def add_silence(body: SilenceRequest, caller: Caller) -> dict[str, Any]:
        # a typo would silence nothing and look as if it did
        one = (body.unit is None) != (body.device is None)  # else the book refuses it
        if one and not _known_to(context.registry(), unit=body.unit, device=body.device):
            raise HTTPException(422, "no such unit or device in the registry")
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
        return [dataclasses.asdict(s) for s in book.silences(now_ms())]

    @app.get("/api/receivers")
    def receivers(caller: Caller) -> list[dict[str, Any]]:
        """Each webhook receiver's health and backlog: is it taking events, since when
        not, its last answer, what waits for it and what was given up."""
        return context.receivers()

    @app.get("/api/units")
    def units(caller: Caller) -> list[dict[str, Any]]:
        """Every unit with its worst active colour: the console's unit tree. Devices the
        registry does not know are no unit: ``/api/unregistered`` lists them."""
        active = [a for a in book.find(states=sorted(ACTIVE_STATES)) if a.unit != UNREGISTERED_UNIT]
        registry = context.registry()
        return [
            {
                "id": state.id,
                "name": (state.unit.name if state.unit else "") or state.id,
                "kind": state.kind,
                "hierarchy": state.hierarchy,
                "hierarchy_names": {
                    level: registry.places.get(place, place)
                    for level, place in state.hierarchy.items()
                },
                "lat": state.unit.lat if state.unit else None,
                "lon": state.unit.lon if state.unit else None,
                "contact": state.unit.contact if state.unit else None,
                "runbook": state.unit.runbook if state.unit else None,
                "colour": COLOURS[state.level],
                "active": len(state.alerts),
            }
            for state in unit_states(registry, active)
        ]

    @app.get("/api/cluster")
    def cluster(caller: Caller) -> dict[str, Any]:
        """The collector instances alive, the partitions each holds, and per partition
        its owner, lease age and lag (docs/cluster.md, "Watching a cluster")."""
        return context.cluster()

    @app.get("/api/unregistered")
    def unregistered(caller: Caller) -> list[dict[str, Any]]:
        """Devices the registry does not know, with active alerts: each device is an
        incident of its own (they share no place), listed apart from the unit tree."""
        by_device: dict[str, list[Alert]] = {}
        for alert in book.find(states=sorted(ACTIVE_STATES), unit=UNREGISTERED_UNIT):
            by_device.setdefault(alert.fingerprint.device, []).append(alert)
        return [
            {
                "device": device,
                "family": next((a.family for a in alerts if a.family), ""),
                "colour": COLOURS[worst_level(alerts)],
                "active": len(alerts),
                "incidents": sorted({a.incident for a in alerts}),
                "started_at_ms": min(a.started_at_ms for a in alerts),
            }
            for device, alerts in sorted(by_device.items())
        ]

    @app.get("/api/alerts/{alert_id}/series")
    def alert_series(
        alert_id: AlertId,
        caller: Caller,
        before_s: Annotated[float, Query(gt=0, le=31 * 86400)] = 900,
        after_s: Annotated[float, Query(gt=0, le=31 * 86400)] = 3600,
    ) -> dict[str, Any]:
        """The alert's series around it, from InfluxDB, for the console's chart."""
        alert = require(alert_id)
        if context.series is None:
            raise HTTPException(503, "no time-series store configured")
        start = alert.started_at_ms - round(before_s * 1000)
        end = min(alert.updated_at_ms + round(after_s * 1000), round(time.time() * 1000))
        points: list[tuple[int, float]] = []
        if alert.fingerprint.quantity:  # a silent device or gateway has no series
            try:
                points = context.series(
                    alert.family, alert.fingerprint.device, alert.fingerprint.quantity, start, end
                )
            except StoreError as exc:
                raise HTTPException(502, f"InfluxDB: {exc}") from None
        return {
            "device": alert.fingerprint.device,
            "quantity": alert.fingerprint.quantity,
            "threshold": alert.threshold,
            "started_at_ms": alert.started_at_ms,
            "start_ms": start,
            "end_ms": end,
            "points": points,
        }

    # -- the console: static files, no build step; the API does the work -------------
    @app.get("/", include_in_schema=False)
    @app.get("/alerts/{alert_id}", include_in_schema=False)
    def console_page(alert_id: int | None = None) -> FileResponse:
        return FileResponse(CONSOLE / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/console", StaticFiles(directory=CONSOLE), name="console")

    @app.get("/healthz")
    def health() -> dict[str, str]:
        if not context.healthy():
            raise HTTPException(503, "not connected")
        problems = context.problems()
        if problems:
            raise HTTPException(503, "; ".join(problems))
        return {"status": "ok"}

    def exposed() -> dict[str, Value]:
        return {**context.metrics(), "api_refused_total": {str(k): n for k, n in refused.items()}}

    exposition = Exposition(exposed)

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus() -> Response:
        return Response(exposition.text(), media_type=CONTENT_TYPE)

    return app
