"""Write errors: real InfluxDB for 400 and 413, a scripted stand-in for 429 and 5xx."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from collector.config import InfluxSettings
from collector.errors import RetryableStoreError
from collector.influx import InfluxClient, query_sync
from fieldtools.localservices import InfluxDB, free_port
from tests.receivers import QuietHandler, serve


def write(settings: InfluxSettings, lines: list[str]):
    async def go():
        async with InfluxClient(settings) as client:
            await client.ensure_database()
            return await client.write_lines(lines)

    return asyncio.run(go())


def count(settings: InfluxSettings, measurement: str) -> int:
    series = query_sync(settings, f'SELECT count("v") FROM "{measurement}"')
    return int(series[0]["values"][0][1]) if series else 0


@pytest.fixture(scope="module")
def small_body_influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxDB]:
    server = InfluxDB(tmp_path_factory.mktemp("influx413"), max_body_size=4000).start()
    yield server
    server.stop()


def test_413_splits_until_batches_fit(small_body_influx: InfluxDB) -> None:
    settings = InfluxSettings(url=small_body_influx.url, database="split")
    lines = [f"m,k=key{i:04d} v={i}i {1_700_000_000_000 + i}" for i in range(600)]
    huge = 'm,k=huge v=1i,pad="' + "x" * 5000 + '" 1700000001000'
    result = write(settings, [*lines, huge])
    assert result.written == 600
    assert result.dropped == {"too_large": 1}
    assert result.requests > 2
    assert count(settings, "m") == 600


def test_400_isolates_the_bad_lines(influxdb: InfluxDB, database: str) -> None:
    settings = InfluxSettings(url=influxdb.url, database=database)
    assert write(settings, ["m v=1i 1700000000000"]).written == 1
    # v is an integer field now: a float v is a field type conflict, refused with 400.
    lines = [f"m v={i}i {1_700_000_000_001 + i}" for i in range(100)]
    lines[37] = "m v=1.5 1700000009999"
    lines[80] = "m v=2.5 1700000009998"
    result = write(settings, lines)
    assert result.dropped == {"rejected": 2}
    assert count(settings, "m") == 1 + 98


def test_refused_lines_are_counted_each_and_logged_rate_limited(
    influxdb: InfluxDB, database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Thousands of refused lines must not become thousands of error lines in the log."""
    settings = InfluxSettings(url=influxdb.url, database=database)
    assert write(settings, ["m v=1i 1700000000000"]).written == 1
    lines = [f"m v={i}i {1_700_000_000_001 + i}" for i in range(200)]
    for k in range(0, 200, 5):
        lines[k] = f"m v={k}.5 {1_700_000_000_001 + k}"  # a field type conflict: 400
    with caplog.at_level(logging.WARNING, logger="collector.influx"):
        result = write(settings, lines)
    assert result.dropped == {"rejected": 40}  # each one counted
    assert count(settings, "m") == 1 + 160
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1 and refused[0].levelno == logging.ERROR


class _Scripted(QuietHandler):
    """A stand-in for an overloaded InfluxDB: real InfluxDB cannot be made to answer 429."""

    script: ClassVar[list[tuple[int, dict[str, str]]]] = []
    seen: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.seen.append(self.path)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        status, headers = self.script.pop(0) if self.script else (204, {})
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def scripted_server() -> Iterator[str]:
    served = serve(_Scripted)
    yield f"http://127.0.0.1:{served.port}"
    served.stop()


@pytest.mark.parametrize(
    ("status", "headers", "retry_after"),
    [
        (429, {"Retry-After": "7"}, 7.0),
        (503, {}, None),
        (500, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),
    ],
)
def test_overload_and_server_errors_are_retryable(
    scripted_server: str, status: int, headers: dict[str, str], retry_after: float | None
) -> None:
    _Scripted.script = [(status, headers)]
    settings = InfluxSettings(url=scripted_server, database="x", create_database=False)
    with pytest.raises(RetryableStoreError) as caught:
        write(settings, ["m v=1i 1"])
    assert caught.value.status == status
    assert caught.value.retry_after_s == retry_after


def test_connection_refused_is_retryable(tmp_path: Path) -> None:
    settings = InfluxSettings(
        url=f"http://127.0.0.1:{free_port()}", database="x", create_database=False
    )
    with pytest.raises(RetryableStoreError):
        write(settings, ["m v=1i 1"])
