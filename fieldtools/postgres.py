"""A PostgreSQL server of its own (Debian's ``postgresql`` package): a fresh cluster
(initdb) in a private temporary directory, on a free loopback port, trusting local
connections. For the tests and ``smartunit cluster-demo`` only: anyone on this machine may
connect as ``postgres``.

PostgreSQL refuses to run as root, so as root it runs as the package's ``postgres`` user,
which is why the directory is its own (a caller's directory may be closed to that user).
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

from collector.errors import ServiceStartError
from fieldtools.localservices import free_port, spawn, stop_process

# Debian's packages install each major version beside the others: the newest one.
POSTGRES_BIN = max(
    Path("/usr/lib/postgresql").glob("*/bin"),
    key=lambda found: int(found.parent.name) if found.parent.name.isdigit() else 0,
    default=Path("/usr/lib/postgresql/none/bin"),
)

_databases = itertools.count(1)


def postgres_installed() -> bool:
    return (POSTGRES_BIN / "postgres").exists()


class PostgresServer:
    """Started by its constructor; ``close()`` stops it and removes its files."""

    def __init__(self) -> None:
        if not postgres_installed():
            raise ServiceStartError(
                "PostgreSQL is not installed; run 'make deps' (Debian package postgresql)"
            )
        self.directory = Path(tempfile.mkdtemp(prefix="smartunit-postgres-"))
        self.as_user: list[str] = []
        if os.getuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
            self.as_user = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"]
            # setuid clears the parent-death signal spawn() sets: setpriv sets it again.
            self.as_user += ["--pdeathsig=TERM", "--"]
        self.data = self.directory / "data"
        initdb = [str(POSTGRES_BIN / "initdb"), "-D", str(self.data), "-U", "postgres"]
        initdb += ["--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions"]
        done = subprocess.run([*self.as_user, *initdb], check=False, capture_output=True)
        if done.returncode != 0:
            shutil.rmtree(self.directory, ignore_errors=True)
            raise ServiceStartError(f"initdb failed: {done.stderr.decode(errors='replace')}")
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
                raise ServiceStartError(f"postgres exited:\n{self.log.read_text()[-3000:]}")
            if subprocess.run(ready, check=False).returncode == 0:
                return
            time.sleep(0.1)
        raise ServiceStartError(f"postgres not ready within 60 s:\n{self.log.read_text()[-3000:]}")

    def new_database(self, name: str = "") -> str:
        """A fresh database (named, or numbered for one test); its URL."""
        name = name or f"test_{os.getpid()}_{next(_databases)}"
        self.sql(f"CREATE DATABASE {name}")
        return self.database_url(name)

    def sql(self, statement: str, database: str = "postgres") -> Any:
        psql = [str(POSTGRES_BIN / "psql"), "-h", "127.0.0.1", "-p", str(self.port)]
        psql += ["-U", "postgres", "-d", database, "-At", "-v", "ON_ERROR_STOP=1", "-c", statement]
        return subprocess.run(psql, check=True, capture_output=True, text=True).stdout

    def close(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
        shutil.rmtree(self.directory, ignore_errors=True)
