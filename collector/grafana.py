"""``smartunit dashboards push``: install or update the dashboards through Grafana's API.

The same JSON files Grafana's file provisioning reads (``dashboards/*.json``) go into a
folder "SmartUnit" (uid ``smartunit``), overwriting earlier versions by their uid, so a
push is repeatable. With ``influx_url`` the datasource the dashboards expect (uid
``smartunit-influxdb``, InfluxQL) is created or updated too. Uses grafana-client; its
errors become ``DashboardPushError`` here, and the token never appears in a message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException

from collector.errors import DashboardPushError

FOLDER_UID = "smartunit"
FOLDER_TITLE = "SmartUnit"
DATASOURCE_UID = "smartunit-influxdb"
DEFAULT_DIRECTORY = Path("dashboards")


@dataclass(frozen=True, kw_only=True)
class InfluxSource:
    url: str
    database: str = "smartunit"
    token: str | None = None


def dashboard_files(directory: Path) -> list[Path]:
    files = sorted(directory.glob("*.json"))
    if not files:
        raise DashboardPushError(f"no dashboards (*.json) in {directory}")
    return files


def push_dashboards(
    grafana_url: str,
    token: str,
    *,
    directory: Path = DEFAULT_DIRECTORY,
    influx: InfluxSource | None = None,
    timeout_s: float = 10.0,
) -> list[str]:
    """Install or update every dashboard; returns the URLs Grafana gives them."""
    files = dashboard_files(directory)
    api = GrafanaApi.from_url(grafana_url, credential=token, timeout=timeout_s)
    try:
        _ensure_folder(api)
        if influx is not None:
            _ensure_datasource(api, influx)
        urls = []
        for path in files:
            board = json.loads(path.read_text())
            board.pop("id", None)  # Grafana matches by uid; a stale id would conflict
            answer = api.dashboard.update_dashboard(
                {
                    "dashboard": board,
                    "folderUid": FOLDER_UID,
                    "overwrite": True,
                    "message": "smartunit dashboards push",
                }
            )
            urls.append(str(answer.get("url", board["uid"])))
        return urls
    except GrafanaException as exc:
        raise DashboardPushError(
            f"Grafana at {grafana_url} answered {exc.status_code}: {exc.message}"
        ) from None
    except Exception as exc:  # connection errors of niquests, the library's transport
        raise DashboardPushError(f"cannot reach Grafana at {grafana_url}: {exc}") from None


def _ensure_folder(api: GrafanaApi) -> None:
    try:
        api.folder.get_folder(FOLDER_UID)
    except GrafanaClientError as exc:
        if exc.status_code != 404:
            raise
        api.folder.create_folder(FOLDER_TITLE, uid=FOLDER_UID)


def _ensure_datasource(api: GrafanaApi, influx: InfluxSource) -> None:
    body: dict[str, Any] = {
        "name": "SmartUnit InfluxDB",
        "uid": DATASOURCE_UID,
        "type": "influxdb",
        "access": "proxy",
        "url": influx.url,
        "jsonData": {"version": "InfluxQL", "dbName": influx.database, "httpMode": "POST"},
    }
    if influx.token:
        body["jsonData"]["httpHeaderName1"] = "Authorization"
        body["secureJsonData"] = {"httpHeaderValue1": f"Token {influx.token}"}
    try:
        api.datasource.get_datasource_by_uid(DATASOURCE_UID)
    except GrafanaClientError as exc:
        if exc.status_code != 404:
            raise
        api.datasource.create_datasource(body)
        return
    api.datasource.update_datasource_by_uid(DATASOURCE_UID, body)
