"""A PostgreSQL server of its own for tests (Debian's ``postgresql`` package), on a free
loopback port, that a test may stop and start again (``pg_ctl stop -m fast``).

PostgreSQL refuses to run as root, so as root it runs as the package's ``postgres`` user.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from fieldtools.localservices import free_port, spawn, stop_process

# Debian's packages install each major version beside the others: the newest one.
POSTGRES_BIN = max(
    Path("/usr/lib/postgresql").glob("*/bin"),
    key=lambda found: int(found.parent.name) if found.parent.name.isdigit() else 0,
    default=Path("/usr/lib/postgresql/none/bin"),
)

_databases = itertools.count(1)


def require_postgres() -> None:
    if not (POSTGRES_BIN / "postgres").exists():
        pytest.skip(
            "PostgreSQL is not installed (Debian's postgresql): run scripts/install-deps.sh"
        )


class PostgresServer:
    def __init__(self) -> None:
        # Not under pytest's directory: as root that one is closed to the postgres user.
        self.directory = Path(tempfile.mkdtemp(prefix="smartunit-postgres-"))
        self.as_user: list[str] = []
        if os.getuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
            self.as_user = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"]
            # setuid clears the parent-death signal spawn() sets: setpriv sets it again.
            self.as_user += ["--pdeathsig=TERM", "--"]
        self.data = self.directory / "data"
        initdb = [str(POSTGRES_BIN / "initdb"), "-D", str(self.data), "-U", "postgres"]
        subprocess.run(
            [
                *self.as_user,
                *initdb,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
            check=True,
            capture_output=True,
        )
        self.port = free_port()
        self.log = self.directory / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def start(self) -> None:
        argv = [str(POSTGRES_BIN / "postgres"), "-D", str(self.data), "-h", "127.0.0.1"]
        argv += ["-p", str(self.port), "-k", str(self.directory)]
        argv += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "max_connections=200"]
        self.proc = spawn([*self.as_user, *argv], log_path=self.log)
        self._wait_ready()

    def stop_fast(self) -> None:
        """What an operator's ``pg_ctl stop -m fast`` does: every session is ended, the
        server shuts down cleanly."""
        pg_ctl = [str(POSTGRES_BIN / "pg_ctl"), "-D", str(self.data), "stop", "-m", "fast"]
        subprocess.run([*self.as_user, *pg_ctl], check=True, capture_output=True, timeout=60)
        if self.proc is not None:
            self.proc.wait(timeout=30)
            self.proc = None

    def _wait_ready(self) -> None:
        ready = [str(POSTGRES_BIN / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited:\n{self.log.read_text()[-3000:]}")
            if subprocess.run(ready, check=False).returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"postgres not ready within 60 s:\n{self.log.read_text()[-3000:]}")

    def new_database(self) -> str:
        """A fresh database for one test; its URL."""
        name = f"test_{os.getpid()}_{next(_databases)}"
        self.sql(f"CREATE DATABASE {name}")
        return self.database_url(name)

    def sql(self, statement: str, database: str = "postgres") -> Any:
        psql = [str(POSTGRES_BIN / "psql"), "-h", "127.0.0.1", "-p", str(self.port)]
        psql += ["-U", "postgres", "-d", database, "-At", "-v", "ON_ERROR_STOP=1", "-c", statement]
        return subprocess.run(psql, check=True, capture_output=True, text=True).stdout

    def close(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        shutil.rmtree(self.directory, ignore_errors=True)
