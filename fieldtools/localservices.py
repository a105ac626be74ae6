"""Start real Mosquitto and InfluxDB servers on free loopback ports in a private directory.

Used by ``smartunit demo``, by the test fixtures and by the benchmarks, so all three run
against the same real servers configured the same way. Every child process is started in
its own session (a Ctrl-C in the terminal reaches only us, and we stop the children in
order) and with a parent-death signal, so no server outlives the process that started it,
even when that process is killed with SIGKILL.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from collector.errors import ServiceStartError

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child between fork and exec.
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _yield_cpu(nice: int) -> Callable[[], None]:
    """Lower the child's CPU priority, between fork and exec (after its new session).

    Both knobs: the thread's nice value, which its threads inherit, and, where the kernel
    groups each session for scheduling (autogroup, on by default in Debian), the new
    session's group, since nice only ranks threads inside one group. Raising either is
    allowed unprivileged; where a kernel refuses, the child runs at normal priority.
    """

    def child() -> None:
        _die_with_parent()
        with contextlib.suppress(OSError):
            os.nice(nice)
        with contextlib.suppress(OSError), open("/proc/self/autogroup", "w") as group:
            group.write(str(nice))

    return child


def spawn(
    argv: Sequence[str],
    *,
    log_path: Path | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    nice: int = 0,
) -> subprocess.Popen[bytes]:
    """Start a child that dies with us and is not reached by the terminal's Ctrl-C.

    ``nice`` > 0 lowers its CPU priority (see ``_yield_cpu``)."""
    out: int | object = subprocess.DEVNULL
    log_file = None
    if log_path is not None:
        log_file = log_path.open("ab")
        out = log_file
    try:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,  # type: ignore[arg-type]
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # prctl and the priority can only be set in the child, between fork and exec
            preexec_fn=_yield_cpu(nice) if nice > 0 else _die_with_parent,  # noqa: PLW1509
            env=env,
            cwd=cwd,
        )
    finally:
        if log_file is not None:
            log_file.close()


def stop_process(proc: subprocess.Popen[bytes], *, timeout_s: float = 10.0) -> int:
    """SIGTERM, wait, then SIGKILL; returns the exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
    return proc.returncode


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_binary(name: str, *extra_dirs: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for directory in (*extra_dirs, "/usr/sbin", "/usr/local/sbin", "/sbin"):
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise ServiceStartError(
        f"{name} is not installed; run 'make deps' (Debian packages mosquitto and influxdb)"
    )


def wait_until(
    ready: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, log: Path, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise ServiceStartError(f"{what} exited with code {proc.returncode}:\n{tail}")
        if ready():
            return
        time.sleep(0.05)
    stop_process(proc)
    raise ServiceStartError(f"{what} did not become ready within {timeout_s:.0f} s (log: {log})")


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass(frozen=True, kw_only=True)
class ServerTls:
    """PEM files for a server's TLS listener; with ``client_ca`` clients need certificates."""

    cert_file: Path
    key_file: Path
    client_ca: Path | None = None


@dataclass(frozen=True, kw_only=True)
class BrokerAuth:
    """Who may sign in (a Mosquitto password file) and publish what (an ACL file)."""

    password_file: Path
    acl_file: Path


@dataclass
class Mosquitto:
    """A Mosquitto broker listening on 127.0.0.1:port (TLS only, with ``tls``).

    Without ``auth`` anyone on this machine may connect and publish anything: for tests
    and benchmarks only; ``smartunit demo`` always gives it (fieldtools/demo.py)."""

    directory: Path
    port: int = 0
    persistence: bool = True
    extra_config: str = ""
    tls: ServerTls | None = None
    auth: BrokerAuth | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "mosquitto.log"

    def config_text(self) -> str:
        # max_queued_messages 0 = no count limit: Mosquitto's default of 1000 silently drops
        # QoS 1 messages for a subscriber that falls behind; memory is bounded by bytes
        # instead. max_inflight_messages 0 lets a batching subscriber hold many unacked
        # messages (MQTT v5 clients announce their own receive-maximum instead).
        lines = [
            # Started as root, Mosquitto switches to user "mosquitto", which cannot write
            # our private directory: no persistence file, no log. Stay who we are.
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            f"listener {self.port} 127.0.0.1",
            *self._tls_lines(),
            *self._auth_lines(),
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.directory}/",
            "autosave_interval 5",
            "max_queued_messages 0",
            "max_queued_bytes 1073741824",
            "max_inflight_messages 0",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "connection_messages false",
        ]
        return "\n".join(lines) + "\n" + self.extra_config

    def _auth_lines(self) -> list[str]:
        if self.auth is None:
            return ["allow_anonymous true"]
        return [
            "allow_anonymous false",
            f"password_file {self.auth.password_file}",
            f"acl_file {self.auth.acl_file}",
        ]

    def _tls_lines(self) -> list[str]:
        tls = self.tls
        if tls is None:
            return []
        lines = [f"certfile {tls.cert_file}", f"keyfile {tls.key_file}"]
        if tls.client_ca is not None:
            lines += [f"cafile {tls.client_ca}", "require_certificate true"]
        return lines

    def start(self, *, timeout_s: float = 15.0) -> Mosquitto:
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        conf = self.directory / "mosquitto.conf"
        conf.write_text(self.config_text())
        binary = find_binary("mosquitto")
        self.proc = spawn([binary, "-c", str(conf)], log_path=self.directory / "stdout.log")
        wait_until(lambda: port_open(self.port), self.proc, "mosquitto", self.log_path, timeout_s)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


@dataclass
class InfluxDB:
    """An InfluxDB 1.x server with its HTTP API on 127.0.0.1:port."""

    directory: Path
    port: int = 0
    rpc_port: int = 0
    max_body_size: int = 25_000_000
    tls: ServerTls | None = None
    # InfluxDB's cache snapshots, compactions and garbage collection come in bursts of a
    # whole core; at equal priority they starved a collector on the same two cores, and
    # alerts waited 130-290 ms instead of 40-70 ms (p99, bench/ingest.py's alert phase).
    # Lower, it takes what the alert path leaves: docs/deploy.md, "Sharing a host".
    cpu_nice: int = 10
    # Go's garbage collector runs each time the heap grows by this percentage over what
    # was live: at Go's default 100 it took about a sixth of InfluxDB's CPU per point
    # written; at 400 the heap grows further between collections (docs/deploy.md,
    # "Sharing a host": the CPU and the memory measured).
    gc_percent: int = 400
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "influxd.log"

    def config_text(self) -> str:
        d = self.directory
        # The top-level bind-address is the RPC (backup/restore) port, 8088 by default: it
        # must move too or a second server on the machine fails to start.
        return f"""\
reporting-enabled = false
bind-address = "127.0.0.1:{self.rpc_port}"

[meta]
  dir = "{d}/meta"
  logging-enabled = false

[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  query-log-enabled = false
  wal-fsync-delay = "0s"

[monitor]
  store-enabled = false

[http]
  bind-address = "127.0.0.1:{self.port}"
  log-enabled = false
  max-body-size = {self.max_body_size}
{self._tls_lines()}

[logging]
  level = "warn"

[continuous_queries]
  enabled = false
"""

    def _tls_lines(self) -> str:
        if self.tls is None:
            return ""
        return (
            "  https-enabled = true\n"
            f'  https-certificate = "{self.tls.cert_file}"\n'
            f'  https-private-key = "{self.tls.key_file}"\n'
        )

    def start(self, *, timeout_s: float = 30.0) -> InfluxDB:
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        if not self.rpc_port:
            self.rpc_port = free_port()
        conf = self.directory / "influxdb.conf"
        conf.write_text(self.config_text())
        binary = find_binary("influxd")
        self.proc = spawn(
            [binary, "-config", str(conf)],
            log_path=self.log_path,
            env={**os.environ, "GOGC": str(self.gc_percent)},
            nice=self.cpu_nice,
        )
        wait_until(self._ping, self.proc, "influxd", self.log_path, timeout_s)
        return self

    def _ping(self) -> bool:
        try:
            # Only "is it up yet": whether its certificate is trusted is the client's test.
            context = ssl._create_unverified_context() if self.tls else None  # noqa: S323
            with urllib.request.urlopen(  # noqa: S310
                f"{self.url}/ping", timeout=0.5, context=context
            ) as resp:
                return bool(resp.status == 204)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
