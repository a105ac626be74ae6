"""Alert store backends by URL scheme: ``alerts.store = "sqlite:///alerts.db"`` (one
collector, the default) or ``"postgresql://user@host:5432/db"`` (shared by several).

A backend is a function from the URL and the store's options to an ``AlertStorage``
(collector/alerts/repositories.py); adding one is a new entry here, and its errors of an
unavailable store in ``STORE_ERRORS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from collector.alerts.pgstore import UNAVAILABLE as POSTGRESQL_UNAVAILABLE
from collector.alerts.pgstore import PgAlertStore
from collector.alerts.repositories import AlertStorage
from collector.alerts.store import UNAVAILABLE as SQLITE_UNAVAILABLE
from collector.alerts.store import SqliteAlertStore
from collector.errors import AlertStoreError


@dataclass(frozen=True, kw_only=True)
class StoreOptions:
    relative_to: Path  # a relative SQLite path is under it
    lease_s: float = 60.0  # a shared store's claims and sweep leases


def _sqlite(url: str, options: StoreOptions) -> AlertStorage:
    """``sqlite:///alerts.db`` is a path relative to ``relative_to``,
    ``sqlite:////var/lib/smartunit/alerts.db`` an absolute one."""
    location = url.partition(":///")[2]
    if not location:
        raise AlertStoreError(f"alert store URL {url!r}: expected sqlite:///<path>", path=Path())
    return SqliteAlertStore(options.relative_to / location)


def _postgresql(url: str, options: StoreOptions) -> AlertStorage:
    return PgAlertStore(url, lease_s=options.lease_s)


BACKENDS: dict[str, Callable[[str, StoreOptions], AlertStorage]] = {
    "sqlite": _sqlite,
    "postgresql": _postgresql,
}
# What any backend raises while its store cannot be used for now: the detections wait
# (collector/alerts/pending.py), the deliveries stay pending.
STORE_ERRORS: tuple[type[Exception], ...] = SQLITE_UNAVAILABLE + POSTGRESQL_UNAVAILABLE


def open_storage(url: str, *, relative_to: Path, lease_s: float = 60.0) -> AlertStorage:
    """Open the alert store at ``url`` (see the module's docstring)."""
    scheme = url.partition("://")[0]
    backend = BACKENDS.get(scheme)
    if backend is None:
        known = ", ".join(f"{name}://..." for name in BACKENDS)
        raise AlertStoreError(f"alert store URL {url!r}: expected one of {known}", path=Path())
    return backend(url, StoreOptions(relative_to=relative_to, lease_s=lease_s))
