"""Alert store backends by URL scheme: ``alerts.store = "sqlite:///alerts.db"``.

A backend is a function from the URL's location to an ``AlertStorage``
(collector/alerts/repositories.py); adding one (PostgreSQL) is a new entry here, and its
errors of an unavailable store in ``STORE_ERRORS``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from collector.alerts.repositories import AlertStorage
from collector.alerts.store import UNAVAILABLE as SQLITE_UNAVAILABLE
from collector.alerts.store import SqliteAlertStore
from collector.errors import AlertStoreError

BACKENDS: dict[str, Callable[[Path], AlertStorage]] = {"sqlite": SqliteAlertStore}
# What any backend raises while its store cannot be used for now: the detections wait
# (collector/alerts/pending.py), the deliveries stay pending.
STORE_ERRORS: tuple[type[Exception], ...] = SQLITE_UNAVAILABLE


def open_storage(url: str, *, relative_to: Path) -> AlertStorage:
    """Open the alert store at ``url``: ``sqlite:///alerts.db`` is a path relative to
    ``relative_to``, ``sqlite:////var/lib/smartunit/alerts.db`` an absolute one."""
    scheme, separator, location = url.partition(":///")
    backend = BACKENDS.get(scheme)
    if not separator or not location or backend is None:
        known = ", ".join(f"{name}:///..." for name in BACKENDS)
        raise AlertStoreError(
            f"alert store URL {url!r}: expected one of {known}", path=Path(location)
        )
    return backend(relative_to / location)
