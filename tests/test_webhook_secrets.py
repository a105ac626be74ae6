"""A receiver URL's user, password and query token never reach the service log."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fieldtools.demo import wait_for_collector
from fieldtools.localservices import spawn, stop_process
from tests.conftest import collector_env, poll
from tests.receivers import QuietHandler, serve
from tests.test_detection_e2e import PRESETS, REGISTRY

PASSWORD = "pw-4711-secret"
TOKEN = "tok-0815-secret"


class EchoingFailure(QuietHandler):
    """A receiver in trouble whose error page repeats the request, as many do."""

    requests = 0

    def do_POST(self) -> None:
        type(self).requests += 1
        self.rfile.read(int(self.headers["Content-Length"]))
        self.answer(503, f"upstream failed for POST {self.path}".encode())


@pytest.fixture
def failing_port() -> Iterator[int]:
    EchoingFailure.requests = 0
    served = serve(EchoingFailure)
    yield served.port
    served.stop()


@pytest.mark.slow
def test_a_failing_delivery_logs_no_secret_of_its_url(
    broker, influxdb, database, publisher, tmp_path: Path, failing_port: int
) -> None:
    registry = tmp_path / "registry.toml"
    registry.write_text(REGISTRY)
    config = tmp_path / "smartunit.toml"
    config.write_text(
        f'[mqtt]\nclient_id = "secrets-{database}"\n[registry]\npath = "{registry}"\n'
        f'[detection]\nrules = ["{PRESETS}"]\nstatistical = ""\n'
        "[alerts]\nretry_initial_s = 0.2\nretry_max_s = 0.5\n"
    )
    url = f"http://orders:{PASSWORD}@127.0.0.1:{failing_port}/hook?access_token={TOKEN}"
    env = collector_env(broker, influxdb, database, tmp_path / "data", SMARTUNIT_WEBHOOK_URL=url)
    log_path = tmp_path / "collector.log"
    command = [sys.executable, "-m", "collector.cli", "run", "--config", str(config)]
    process = spawn(command, env=env, log_path=log_path)
    try:
        wait_for_collector(broker.url, f"secrets-{database}")
        start = time.time() - 30
        for i, value in enumerate([3, 55, 56, 57, 58]):  # a red gas alarm
            publisher.publish(
                "smartunit/v1/chem/gas-1/data",
                json.dumps({"ts": start + 3 * i, "readings": {"lel_pct": value}}),
            )
        failures = poll(
            lambda: log_path.read_text().count("webhook delivery failed"), lambda n: n >= 1
        )
        poll(lambda: EchoingFailure.requests, lambda n: n >= 2)  # logged at most once a minute
    finally:
        stop_process(process)
    log = log_path.read_text()
    assert failures >= 1 and EchoingFailure.requests >= 2, log[-3000:]
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    failed = [line for line in lines if line["msg"] == "webhook delivery failed; will retry"]
    assert failed and all(line["receiver"] == "default" for line in failed)
    assert "HTTP 503: upstream failed for POST /hook?access_token=***" in failed[0]["error"]
    (started,) = [line for line in lines if line["msg"] == "starting collector"]
    (receiver,) = started["settings"]["alerts"]["receivers"]
    assert receiver["url"] == f"http://***@127.0.0.1:{failing_port}/hook?access_token=***"
    for secret in (PASSWORD, TOKEN, "orders:"):
        assert secret not in log
