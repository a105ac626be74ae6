"""The HTTP API inside the collector: uvicorn on the collector's event loop."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import uvicorn

from collector.alerting import AlertWiring
from collector.api import ApiContext, create_app
from collector.config import Settings
from collector.influx import BlockingQueries
from collector.metrics import Value
from collector.queries import read_series_means
from collector.registry import Registry

log = logging.getLogger(__name__)


def build_api_server(
    settings: Settings,
    *,
    alerts: AlertWiring,
    metrics: Callable[[], Mapping[str, Value]],
    healthy: Callable[[], bool],
    registry: Callable[[], Registry],
    cluster: Callable[[], dict[str, Any]],
) -> EmbeddedServer:
    http = settings.http
    influx = BlockingQueries(settings.influx)  # closed when the server stops (serve)

    def series(
        family: str, device: str, quantity: str, start_ms: int, end_ms: int
    ) -> list[tuple[int, float]]:
        return read_series_means(
            influx,
            family=family,
            device=device,
            quantity=quantity,
            start_ms=start_ms,
            end_ms=end_ms,
        )

    app = create_app(
        ApiContext(
            book=alerts.book,
            tokens=http.tokens,
            public_url=settings.alerts.public_url,
            metrics=metrics,
            receivers=alerts.receivers,
            healthy=healthy,
            problems=alerts.problems,
            registry=registry,
            series=series,
            cluster=cluster,
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
    return EmbeddedServer(config, influx)


async def serve(api: EmbeddedServer) -> None:
    # uvicorn exits the process when it cannot bind its port; the API failing must not
    # stop ingest, so that becomes an error in the log.
    try:
        await api.serve()
    except (SystemExit, OSError) as exc:
        log.error("HTTP API not available: %s (port %s)", exc, api.config.port)
    finally:
        api.influx.close()


class EmbeddedServer(uvicorn.Server):
    """uvicorn inside the collector's loop: signals stay the collector's (it flushes first)."""

    def __init__(self, config: uvicorn.Config, influx: BlockingQueries) -> None:
        super().__init__(config)
        self.influx = influx  # the charts' connections to InfluxDB

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
