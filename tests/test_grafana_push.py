"""``smartunit dashboards push`` against a stand-in Grafana HTTP API.

No Grafana server can run on these machines, so ``StandInGrafana`` (a fake, named as such)
answers the few endpoints the push uses, as Grafana 11 documents them, and records what
it was sent. The real command runs as a subprocess, as an operator would run it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from fieldtools.localservices import free_port
from tests.receivers import QuietHandler, serve

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "glsa_stand-in-service-account-token"


class StandInGrafana(QuietHandler):
    folders: ClassVar[set[str]] = set()
    datasources: ClassVar[dict[str, dict]] = {}
    dashboards: ClassVar[dict[str, dict]] = {}
    calls: ClassVar[list[str]] = []

    def _authorised(self) -> bool:
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._answer(401, {"message": "invalid API key"})
            return False
        return True

    def _body(self) -> dict:
        return json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.calls.append(f"GET {self.path}")
        if not self._authorised():
            return
        if self.path.startswith("/api/folders/"):
            uid = self.path.rsplit("/", 1)[1]
            found = uid in self.folders
            self._answer(200 if found else 404, {"uid": uid} if found else {"message": "nf"})
        elif self.path.startswith("/api/datasources/uid/"):
            uid = self.path.rsplit("/", 1)[1]
            source = self.datasources.get(uid)
            self._answer(200 if source else 404, source or {"message": "not found"})
        else:
            self._answer(404, {"message": "not found"})

    def do_POST(self) -> None:
        self.calls.append(f"POST {self.path}")
        if not self._authorised():
            return
        body = self._body()
        if self.path == "/api/folders":
            self.folders.add(body["uid"])
            self._answer(200, {"uid": body["uid"], "title": body["title"]})
        elif self.path == "/api/datasources":
            self.datasources[body["uid"]] = body
            self._answer(200, {"datasource": body})
        elif self.path == "/api/dashboards/db":
            board = body["dashboard"]
            assert body["folderUid"] in self.folders and body["overwrite"] is True
            self.dashboards[board["uid"]] = body
            self._answer(
                200, {"status": "success", "uid": board["uid"], "url": f"/d/{board['uid']}"}
            )
        else:
            self._answer(404, {"message": "not found"})

    def do_PUT(self) -> None:
        self.calls.append(f"PUT {self.path}")
        if not self._authorised():
            return
        body = self._body()
        self.datasources[self.path.rsplit("/", 1)[1]] = body
        self._answer(200, {"datasource": body})


@pytest.fixture
def grafana() -> Iterator[str]:
    StandInGrafana.folders, StandInGrafana.datasources = set(), {}
    StandInGrafana.dashboards, StandInGrafana.calls = {}, []
    served = serve(StandInGrafana)
    yield f"http://127.0.0.1:{served.port}"
    served.stop()


def push(url: str, token: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "collector.cli",
            "dashboards",
            "push",
            "--grafana-url",
            url,
            "--dir",
            str(ROOT / "dashboards"),
            *extra,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "SMARTUNIT_GRAFANA_TOKEN": token, "SMARTUNIT_INFLUX_TOKEN": "influx-t"},
    )


def test_push_installs_then_updates_every_dashboard(grafana: str) -> None:
    first = push(grafana, TOKEN, "--influx-url", "http://influxdb:8086")
    assert first.returncode == 0, first.stderr
    files = sorted((ROOT / "dashboards").glob("*.json"))
    shipped = {json.loads(p.read_text())["uid"] for p in files}
    assert len(shipped) == len(files) >= 7  # one uid each: overview, devices, collector, families
    assert set(StandInGrafana.dashboards) == shipped
    assert StandInGrafana.folders == {"smartunit"}
    source = StandInGrafana.datasources["smartunit-influxdb"]
    assert source["jsonData"]["dbName"] == "smartunit"
    assert source["secureJsonData"]["httpHeaderValue1"] == "Token influx-t"
    assert first.stdout.count("pushed /d/smartunit-") == len(files)

    StandInGrafana.calls.clear()
    again = push(grafana, TOKEN, "--influx-url", "http://influxdb:8086")
    assert again.returncode == 0, again.stderr
    assert "POST /api/folders" not in StandInGrafana.calls  # the folder exists: reused
    assert "PUT /api/datasources/uid/smartunit-influxdb" in StandInGrafana.calls
    assert StandInGrafana.calls.count("POST /api/dashboards/db") == len(files)


def test_a_wrong_token_is_a_clear_error_that_does_not_print_it(grafana: str) -> None:
    done = push(grafana, "glsa_wrong-token")
    assert done.returncode == 1
    assert "401" in done.stderr and "wrong-token" not in done.stderr + done.stdout
    assert not StandInGrafana.dashboards


def test_no_grafana_there_is_a_clear_error() -> None:
    done = push(f"http://127.0.0.1:{free_port()}", TOKEN)
    assert done.returncode == 1 and "cannot reach Grafana" in done.stderr
