"""The API under hostile requests: large bodies, no credentials, slow senders, many at once."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from fieldtools.demo import wait_for_collector
from fieldtools.localservices import spawn, stop_process
from tests.conftest import collector_env, poll

MiB = 1024 * 1024
TOKEN = "tok-limits"


def large_action(mebibytes: int) -> Iterator[bytes]:
    """A well-formed action whose note is ``mebibytes`` MiB, sent chunked, never held."""
    chunk = b"x" * MiB
    yield b'{"actor": "a", "unit": "u", "minutes": 5, "reason": "r", "note": "'
    for _ in range(mebibytes):
        yield chunk
    yield b'"}'


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (peak resident since the last reset), in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in {"VmRSS", "VmHWM"}:
            fields[name] = int(value.split()[0])
    return fields


def post(url: str, body: Iterator[bytes], headers: dict[str, str] | None = None) -> int:
    try:
        return httpx.post(url, content=body, headers=headers, timeout=60).status_code
    except httpx.TransportError as exc:  # no answer at all counts as a failure below
        return -len(type(exc).__name__)


@pytest.mark.slow
def test_large_posts_leave_the_collectors_memory_where_it_was(
    broker, influxdb, database, tmp_path: Path
) -> None:
    config = tmp_path / "smartunit.toml"
    config.write_text(f'[mqtt]\nclient_id = "limits-{database}"\n')
    env = collector_env(broker, influxdb, database, tmp_path / "data", SMARTUNIT_API_TOKEN=TOKEN)
    base = f"http://127.0.0.1:{env['SMARTUNIT_HTTP_PORT']}"
    command = [sys.executable, "-m", "collector.cli", "run", "--config", str(config)]
    log = tmp_path / "collector.log"
    collector = spawn(command, env=env, log_path=log)
    try:
        wait_for_collector(broker.url, f"limits-{database}")

        def healthz() -> int:
            try:
                return httpx.get(f"{base}/healthz", timeout=2).status_code
            except httpx.TransportError:
                return 0

        assert poll(healthz, lambda status: status == 200) == 200, log.read_text()[-2000:]
        authorised = {"Authorization": f"Bearer {TOKEN}"}
        # every code path once, so that what it loads on first use is in the baseline
        for _ in range(3):
            httpx.post(f"{base}/api/alerts/1/ack", json={"actor": "a"})
            httpx.post(f"{base}/api/alerts/1/ack", json={"actor": "a"}, headers=authorised)
            httpx.post(f"{base}/api/silences", json={"actor": "a"}, headers=authorised)
            httpx.get(f"{base}/api/alerts", headers=authorised)
        before = memory_kib(collector.pid)
        Path(f"/proc/{collector.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS

        targets = [f"{base}/api/alerts/1/ack", f"{base}/api/silences"]
        with ThreadPoolExecutor(max_workers=5) as pool:
            anonymous = list(pool.map(lambda i: post(targets[i % 2], large_action(50)), range(20)))
            # a known token does not buy a large body either
            authenticated = list(
                pool.map(lambda i: post(targets[i % 2], large_action(50), authorised), range(4))
            )
        declared = httpx.post(
            targets[0],
            content=b"x" * (MiB + 1),
            headers={**authorised, "Content-Type": "application/json"},
        )
        after = memory_kib(collector.pid)
        grown_peak_mib = (after["VmHWM"] - before["VmRSS"]) / 1024
        grown_mib = (after["VmRSS"] - before["VmRSS"]) / 1024
        print(
            f"resident {before['VmRSS'] / 1024:.0f} MiB before, {after['VmRSS'] / 1024:.0f}"
            f" after, peak {after['VmHWM'] / 1024:.0f} during 20+4 x 50 MiB posts"
        )
        assert grown_peak_mib < 50, (before, after)
        assert grown_mib < 50, (before, after)

        assert anonymous == [401] * 20  # refused from the headers, the body never read
        assert authenticated == [413] * 4
        assert declared.status_code == 413
        assert "x" not in declared.text  # the input is not echoed
        # counted where an operator looks
        metrics = httpx.get(f"{base}/metrics").text
        assert 'smartunit_api_refused_total{status="401"} 23.0' in metrics  # 3 warm-up
        assert 'smartunit_api_refused_total{status="413"} 5.0' in metrics
        # and the API still does its work
        assert httpx.get(f"{base}/api/alerts", headers=authorised).json() == []
        missing = httpx.post(f"{base}/api/alerts/1/ack", json={"actor": "a"}, headers=authorised)
        assert missing.status_code == 404
        assert collector.poll() is None
    finally:
        stop_process(collector)


def stalled_request(port: int, path: str) -> socket.socket:
    """A request whose body stops after a few of the bytes it announced."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"actor"'.encode()
    )
    return sock


def healthz(base: str) -> int:
    try:
        return httpx.get(f"{base}/healthz", timeout=5).status_code
    except httpx.TransportError:
        return 0


@pytest.mark.slow
def test_connections_beyond_the_limit_are_turned_away(make_settings, run_collector) -> None:
    settings = make_settings(
        http={"tokens": {"t": SecretStr(TOKEN)}, "max_connections": 4, "body_timeout_s": 120}
    )
    run_collector(settings)
    base = f"http://127.0.0.1:{settings.http.port}"
    assert poll(lambda: healthz(base), lambda status: status == 200) == 200
    stalled: list[socket.socket] = []
    answers = []
    try:
        # slow clients take the slots one by one; once all are taken, a newcomer is
        # answered 503 at once instead of being queued behind them
        while len(stalled) < 8 and 503 not in answers:
            stalled.append(stalled_request(settings.http.port, "/api/alerts/1/comment"))
            answers.append(healthz(base))
        assert answers[-1] == 503, answers
    finally:
        for sock in stalled:
            sock.close()
    assert poll(lambda: healthz(base), lambda status: status == 200) == 200


@pytest.mark.slow
def test_slow_senders_are_cut_off(make_settings, run_collector) -> None:
    settings = make_settings(http={"tokens": {"t": SecretStr(TOKEN)}, "body_timeout_s": 1.0})
    run_collector(settings)
    base = f"http://127.0.0.1:{settings.http.port}"
    assert poll(lambda: healthz(base), lambda status: status == 200) == 200
    stalled = [stalled_request(settings.http.port, "/api/alerts/1/comment") for _ in range(3)]
    try:
        for sock in stalled:
            answer = sock.recv(4096)
            assert answer.startswith(b"HTTP/1.1 408"), answer
    finally:
        for sock in stalled:
            sock.close()
    assert healthz(base) == 200
