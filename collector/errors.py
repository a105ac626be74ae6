"""The exceptions SmartUnit raises, all in one tree.

    SmartUnitError
    ├── ConfigError            bad configuration or registry; the CLI exits with code 2
    ├── ServiceStartError      a local broker or database would not start (demo, tests, bench)
    ├── DashboardPushError     Grafana refused or could not be reached (dashboards push)
    ├── AlertStoreError        the alert database cannot be used as it is
    │   └── DamagedAlertStoreError  SQLite finds the file damaged, or not a database at all
    ├── AlertConflictError     another instance changed the alert first: read again, decide again
    ├── AlertActionError       an action on the alerts is refused (also a ValueError)
    │   ├── TransitionError        the alert's state does not allow it (ack a closed alert)
    │   ├── UnknownAlertError      no alert has that id (also a KeyError)
    │   └── FieldAckError          an on-site acknowledgement that cannot be applied
    ├── SpoolError             the disk spool did not take a batch: it stays with the broker
    │   ├── SpoolFull              the spool holds its ``ingest.spool_max_bytes`` already
    │   └── SpoolWriteFailed       the spool's disk refused the write (full, I/O error)
    ├── MqttProtocolError      the broker sent what the receiver cannot follow: reconnect
    └── StoreError             talking to the time-series store failed
        ├── RetryableStoreError    timeouts, connection errors, 429, 5xx: try again later
        └── RejectedWriteError     400 and other 4xx: retrying the same lines cannot help

Defined next to their code, because they never leave it:
``detectors.registry.UnknownDetectorError`` (a ValueError: the detectors package imports
nothing of the collector; configuration validation turns it into a ``ConfigError``),
``collector.apiguard.Refused`` (the API guard's answer to a request it refuses, turned
into an HTTP status inside the guard) and the simulator's own control flow.

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


class AlertConflictError(SmartUnitError):
    """A shared alert store refused a change decided on a copy of an alert that another
    collector instance has changed since (or an alert opened for a fingerprint another
    instance opened first): the change is read again and decided again."""


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


class AlertActionError(SmartUnitError, ValueError):
    """A person's or a unit's action on the alerts is refused; the message says why."""


class TransitionError(AlertActionError):
    """A workflow action that the alert's state does not allow (e.g. ack a closed alert)."""


class UnknownAlertError(AlertActionError, KeyError):
    """No alert has this id."""

    def __init__(self, alert_id: int) -> None:
        super().__init__(f"no alert {alert_id}")
        self.alert_id = alert_id

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class FieldAckError(AlertActionError):
    """An on-site acknowledgement that cannot be applied: a payload that is not one, a
    pseudo-unit, an alert of another unit."""


class SpoolError(SmartUnitError):
    """The spool did not take this batch; leave its messages with the broker."""


class SpoolFull(SpoolError):
    """The spool holds ``max_bytes`` already."""


class SpoolWriteFailed(SpoolError):
    """Writing or syncing the record failed; the segment was cut back to before it."""

    def __init__(self, message: str, *, disk_full: bool) -> None:
        super().__init__(message)
        self.disk_full = disk_full


class MqttProtocolError(SmartUnitError):
    """The broker sent something this client cannot follow; the connection is dropped."""
