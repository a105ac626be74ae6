"""InfluxDB over the HTTP API every major version serves: ``/write`` and ``/query``.

Line protocol goes to ``/write`` (native in 1.x, compatibility endpoint in 2.x and 3.x),
InfluxQL to ``/query``. influxdb-client is not used: it speaks ``/api/v2``, which the
InfluxDB 1.x of Debian does not serve.

Write errors are classified the way Telegraf does, and refined so that a valid reading is
never lost to its neighbours in a batch:

=====================  =====================================================================
connection, timeout,   ``RetryableStoreError``: the caller retries with capped exponential
429, 5xx, 401/403/404  backoff, honouring Retry-After. Auth and missing-database errors are
                       operator mistakes that a fix makes good, so they are retried, not dropped.
413 (too large)        split the batch in halves and write each; one line alone too large is
                       dropped and counted (``too_large``).
400 (bad request)      bisect the batch to find the offending lines; those alone are dropped
                       and counted (``rejected``), the rest written. Rewriting a line that was
                       already written is harmless: the same point overwrites itself.
=====================  =====================================================================
"""

from __future__ import annotations

import email.utils
import gzip
import logging
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from collector.config import InfluxSettings
from collector.errors import RejectedWriteError, RetryableStoreError, StoreError
from collector.logs import RateLimitedLog

log = logging.getLogger(__name__)

REFUSED_LOG_INTERVAL_S = 60.0


def quote_ident(name: str) -> str:
    """An InfluxQL identifier in double quotes, safe for any text."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_literal(text: str) -> str:
    """An InfluxQL string literal in single quotes, safe for any text."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _connection(settings: InfluxSettings) -> tuple[str, dict[str, str], tuple[str, str] | None]:
    """Base URL without credentials, headers and basic auth for the configured server."""
    parts = urlsplit(settings.url)
    netloc = f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname or ""
    base_url = parts._replace(netloc=netloc).geturl().rstrip("/")
    headers = {"User-Agent": "smartunit-monitor"}
    auth: tuple[str, str] | None = None
    if settings.token is not None:
        headers["Authorization"] = f"Token {settings.token.get_secret_value()}"
    elif parts.username:
        auth = (parts.username, parts.password or "")
    return base_url, headers, auth


def tls_verification(settings: InfluxSettings) -> ssl.SSLContext | bool:
    """How to check the server's certificate: against ``ca_file``, the system, or not."""
    if settings.ca_file:
        return ssl.create_default_context(cafile=str(settings.ca_file))
    return settings.verify_tls


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), if any."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(moment.timestamp() - time.time(), 0.0)


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
        if isinstance(body, dict) and "error" in body:
            return str(body["error"])
    except ValueError:
        pass
    return response.text[:300]


def classify(response: httpx.Response) -> StoreError | None:
    """None for success, otherwise the error the response stands for."""
    status = response.status_code
    if status < 300:
        return None
    message = f"HTTP {status}: {_error_text(response)}"
    if status == 429 or status >= 500 or status in {401, 403, 404, 408}:
        return RetryableStoreError(
            message,
            status=status,
            retry_after_s=retry_after_seconds(response.headers.get("Retry-After")),
        )
    return RejectedWriteError(message, status=status)


@dataclass(slots=True)
class WriteResult:
    written: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    requests: int = 0

    def drop(self, why: str, count: int = 1) -> None:
        self.dropped[why] = self.dropped.get(why, 0) + count


class InfluxClient:
    """Async ``/write`` and ``/query`` with error classification; one instance per service."""

    def __init__(self, settings: InfluxSettings) -> None:
        self.settings = settings
        self.base_url, headers, auth = _connection(settings)
        verify = tls_verification(settings)
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            auth=auth,
            timeout=settings.timeout_s,
            verify=verify,
            limits=httpx.Limits(max_connections=8, max_keepalive_connections=8),
        )
        # Each refused line is counted (WriteResult.dropped); a burst of them is one line
        # in the log per interval, with how many were left out.
        self._refused_log = RateLimitedLog(log, REFUSED_LOG_INTERVAL_S)
        self._write_params = {"db": settings.database, "precision": "ms"}
        if settings.retention_policy:
            self._write_params["rp"] = settings.retention_policy

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> InfluxClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _post_write(self, body: bytes) -> httpx.Response:
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if self.settings.gzip:
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        try:
            return await self._http.post(
                "/write", params=self._write_params, content=body, headers=headers
            )
        except httpx.TimeoutException as exc:
            raise RetryableStoreError(f"timeout writing to {self.base_url}: {exc}") from exc
        except httpx.HTTPError as exc:
            raise RetryableStoreError(f"cannot reach {self.base_url}: {exc}") from exc

    async def write_lines(self, lines: Sequence[str]) -> WriteResult:
        """Write, splitting on 413 and isolating bad lines on 400; retryable errors raise."""
        result = WriteResult()
        await self._write_part(lines, result)
        return result

    async def _write_part(self, lines: Sequence[str], result: WriteResult) -> None:
        if not lines:
            return
        response = await self._post_write("\n".join(lines).encode())
        result.requests += 1
        error = classify(response)
        if error is None:
            result.written += len(lines)
            return
        if isinstance(error, RetryableStoreError):
            if error.status == 404 and "database not found" in str(error):
                # It was out of reach when the collector started; the write is retried.
                await self.ensure_database()
            raise error
        if len(lines) == 1:
            why = "too_large" if error.status == 413 else "rejected"
            result.drop(why)
            self._refused_log.error(
                why,
                "InfluxDB refused a line; dropped",
                status=error.status,
                error=str(error),
                line=lines[0][:300],
            )
            return
        middle = len(lines) // 2
        await self._write_part(lines[:middle], result)
        await self._write_part(lines[middle:], result)

    async def query(self, influxql: str, *, database: str | None = None) -> list[dict[str, Any]]:
        """Run InfluxQL; the list of series of the first statement (times in epoch ms)."""
        params = {"q": influxql, "db": database or self.settings.database, "epoch": "ms"}
        try:
            response = await self._http.post("/query", data=params)
        except httpx.HTTPError as exc:
            raise RetryableStoreError(f"cannot reach {self.base_url}: {exc}") from exc
        return _series_of(response)

    async def ensure_database(self) -> None:
        """Create the database (1.x) if configured to; failures are logged, not raised."""
        if not self.settings.create_database:
            return
        try:
            await self.query(f"CREATE DATABASE {quote_ident(self.settings.database)}")
        except StoreError as exc:
            # InfluxDB 2.x/3.x have no CREATE DATABASE; their bucket must exist already.
            log.warning("could not create database %r: %s", self.settings.database, exc)


def _series_of(response: httpx.Response) -> list[dict[str, Any]]:
    error = classify(response)
    if error is not None:
        raise error
    body = orjson.loads(response.content)
    results = body.get("results") or [{}]
    first = results[0]
    if "error" in first:
        raise RejectedWriteError(f"query failed: {first['error']}", status=response.status_code)
    series: list[dict[str, Any]] = first.get("series", [])
    return series


class BlockingQueries:
    """InfluxQL reads from worker threads (the HTTP API's), over one pool of connections.

    httpx's client is safe to share between threads; closing it ends its connections."""

    def __init__(self, settings: InfluxSettings) -> None:
        base_url, headers, auth = _connection(settings)
        self.url = f"{base_url}/query"
        self.database = settings.database
        self._client = httpx.Client(
            headers=headers,
            auth=auth,
            timeout=settings.timeout_s,
            verify=tls_verification(settings),
        )

    def query(self, influxql: str) -> list[dict[str, Any]]:
        try:
            response = self._client.post(
                self.url, data={"q": influxql, "db": self.database, "epoch": "ms"}
            )
        except httpx.HTTPError as exc:
            raise RetryableStoreError(f"cannot reach {self.url}: {exc}") from exc
        return _series_of(response)

    def close(self) -> None:
        self._client.close()


def query_sync(settings: InfluxSettings, influxql: str) -> list[dict[str, Any]]:
    """Blocking InfluxQL query for the command line and tests: a connection of its own."""
    base_url, headers, auth = _connection(settings)
    url = f"{base_url}/query"
    verify = tls_verification(settings)
    try:
        response = httpx.post(
            url,
            data={"q": influxql, "db": settings.database, "epoch": "ms"},
            headers=headers,
            auth=auth,
            timeout=settings.timeout_s,
            verify=verify,
        )
    except httpx.HTTPError as exc:
        raise RetryableStoreError(f"cannot reach {url}: {exc}") from exc
    return _series_of(response)


def rows(series: dict[str, Any]) -> list[dict[str, Any]]:
    """A series' values as dicts keyed by column name."""
    columns = series["columns"]
    return [dict(zip(columns, values, strict=True)) for values in series.get("values", [])]
