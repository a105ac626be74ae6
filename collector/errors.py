"""The exceptions SmartUnit raises, all in one tree.

    SmartUnitError
    ├── ConfigError            bad configuration or registry; the CLI exits with code 2
    ├── ServiceStartError      a local broker or database would not start (demo, tests, bench)
    ├── DashboardPushError     Grafana refused or could not be reached (dashboards push)
    ├── AlertStoreError        the alert database cannot be used as it is
    │   └── DamagedAlertStoreError  SQLite finds the file damaged, or not a database at all
    └── StoreError             talking to the time-series store failed
        ├── RetryableStoreError    timeouts, connection errors, 429, 5xx: try again later
        └── RejectedWriteError     400 and other 4xx: retrying the same lines cannot help

Third-party errors (httpx, paho, grafana-client) are caught where they enter and re-raised as one of
these, so callers never need to import those libraries to handle failure. Invalid device
messages are not exceptions: they are rejections, counted and quarantined (see
``collector.protocol``).
"""

from __future__ import annotations

from pathlib import Path


class SmartUnitError(Exception):
    """Root of every error SmartUnit raises on purpose."""


class ConfigError(SmartUnitError):
    """The configuration or the registry is invalid; the message names the bad key."""


class ServiceStartError(SmartUnitError):
    """A local service (Mosquitto, InfluxDB) could not be started or did not become ready."""


class DashboardPushError(SmartUnitError):
    """Installing the dashboards through Grafana's HTTP API failed; the message says where."""


class AlertStoreError(SmartUnitError):
    """The alert database cannot be used as it is; the message names the file."""

    def __init__(self, message: str, *, path: Path) -> None:
        super().__init__(message)
        self.path = path


class DamagedAlertStoreError(AlertStoreError):
    """SQLite finds the alert database damaged; ``smartunit alerts-db recover`` salvages it."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"alert database {path} is damaged: {problem}", path=path)
        self.problem = problem


class StoreError(SmartUnitError):
    """A request to the time-series store failed."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RetryableStoreError(StoreError):
    """The store is down, slow or overloaded; the same request may succeed later."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after_s = retry_after_s


class RejectedWriteError(StoreError):
    """The store refused the request itself; sending it again unchanged cannot succeed."""
