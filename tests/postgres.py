"""The tests' PostgreSQL server: fieldtools/postgres.py's, one a session (a test may stop
and start it again, ``stop_fast``), skipped where PostgreSQL is not installed."""

from __future__ import annotations

import pytest

from fieldtools.postgres import POSTGRES_BIN, PostgresServer, postgres_installed

__all__ = ["POSTGRES_BIN", "PostgresServer", "require_postgres"]


def require_postgres() -> None:
    if not postgres_installed():
        pytest.skip(
            "PostgreSQL is not installed (Debian's postgresql): run scripts/install-deps.sh"
        )
