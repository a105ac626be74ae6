"""The HTTP API inside the collector: uvicorn on the collector's event loop."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping

import uvicorn

from collector.alerting import AlertWiring
from collector.api import ApiContext, create_app
from collector.config import Settings
from collector.influx import query_sync, quote_ident, quote_literal, rows
from collector.metrics import Value
from collector.registry import Registry

log = logging.getLogger(__name__)


def build_api_server(
    settings: Settings,
    *,
    alerts: AlertWiring,
    metrics: Callable[[], Mapping[str, Value]],
    healthy: Callable[[], bool],
    registry: Callable[[], Registry],
) -> uvicorn.Server:
    http = settings.http
    influx = settings.influx

    def series(
        family: str, device: str, quantity: str, start_ms: int, end_ms: int
    ) -> list[tuple[int, float]]:
        # about 600 points, whatever the window: a chart, not an export
        step_s = max(1, (end_ms - start_ms) // 600_000)
        query = (
            f"SELECT mean({quote_ident(quantity)}) FROM {quote_ident(family)} "
            f'WHERE "device" = {quote_literal(device)} '
            f"AND time >= {start_ms}ms AND time <= {end_ms}ms "
            f"GROUP BY time({step_s}s) fill(none)"
        )
        return [
            (int(r["time"]), float(r["mean"])) for s in query_sync(influx, query) for r in rows(s)
        ]

    app = create_app(
        ApiContext(
            book=alerts.book,
            tokens=http.tokens,
            public_url=settings.alerts.public_url,
            metrics=metrics,
            receivers=alerts.dispatcher.status,
            healthy=healthy,
            problems=alerts.problems,
            registry=registry,
            series=series,
            ack_deadlines_s=settings.alerts.ack_deadlines_s,
            max_body_bytes=http.max_body_bytes,
            body_timeout_s=http.body_timeout_s,
        )
    )
    config = uvicorn.Config(
        app,
        host=http.host,
        port=http.port,
        log_level="warning",
        lifespan="off",
        access_log=False,
        limit_concurrency=http.max_connections,
    )
    return _EmbeddedServer(config)


async def serve(api: uvicorn.Server) -> None:
    # uvicorn exits the process when it cannot bind its port; the API failing must not
    # stop ingest, so that becomes an error in the log.
    try:
        await api.serve()
    except (SystemExit, OSError) as exc:
        log.error("HTTP API not available: %s (port %s)", exc, api.config.port)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside the collector's loop: signals stay the collector's (it flushes first)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
