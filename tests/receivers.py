"""Stand-in HTTP servers for the tests (webhook receivers above all), on a free port.

- ``serve(handler)``: a threaded HTTP server for a handler class (``Served.stop`` ends it);
- ``QuietHandler``: a handler that logs nothing and answers in one call;
- ``WorkOrders``: a work-order system as docs/webhooks.md asks receivers to be: it
  processes each idempotency key once and records what it saw; with a ``secret`` it
  refuses bad signatures (401); it can be down for a number of requests (500) and hang
  once past the sender's timeout;
- the ``receiver_url`` fixture: ``WorkOrders`` checking ``SECRET``, reset for each test.

A handler's record is kept on its class (the server makes a handler per request): one
server per handler class at a time, reset by whoever serves it.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from collector.alerts.notify import EVENT_ID_HEADER, SIGNATURE_HEADER, verify_signature
from fieldtools.localservices import free_port

SECRET = "s3cret-shared-with-the-receiver"


class QuietHandler(http.server.BaseHTTPRequestHandler):
    def answer(self, status: int, body: bytes = b"") -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Served:
    url: str  # the hook's URL
    port: int
    server: http.server.ThreadingHTTPServer

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve(handler: type[http.server.BaseHTTPRequestHandler], port: int | None = None) -> Served:
    """Serve ``handler`` on ``port`` (a free one unless told) until ``stop``."""
    port = port or free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return Served(f"http://127.0.0.1:{port}/hook", port, server)


class WorkOrders(QuietHandler):
    """A work-order system: each event processed once, whatever the repeats."""

    secret: ClassVar[str | None] = None  # None: takes unsigned requests
    failures_left = 0  # requests answered 500 before it works again
    hang_once = False  # the next request waits longer than the sender's timeout
    processed: ClassVar[list[dict[str, Any]]] = []  # each event once, in arrival order
    arrived_at: ClassVar[list[float]] = []  # when each of ``processed`` arrived
    keys_seen: ClassVar[set[str]] = set()
    repeated: ClassVar[list[str]] = []  # keys that came again
    requests = 0
    bad_signatures = 0

    @classmethod
    def reset(cls, *, secret: str | None) -> None:
        cls.secret = secret
        cls.failures_left, cls.hang_once = 0, False
        cls.processed, cls.arrived_at, cls.keys_seen, cls.repeated = [], [], set(), []
        cls.requests = cls.bad_signatures = 0

    def do_POST(self) -> None:
        cls = type(self)
        cls.requests += 1
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if cls.hang_once:
            cls.hang_once = False
            time.sleep(1.5)  # longer than the sender's timeout
        if cls.failures_left > 0:
            cls.failures_left -= 1
            self.answer(500)
            return
        if cls.secret is not None and not verify_signature(
            cls.secret, body, self.headers.get(SIGNATURE_HEADER, ""), now=int(time.time())
        ):
            cls.bad_signatures += 1
            self.answer(401)
            return
        key = self.headers[EVENT_ID_HEADER]
        if key not in cls.keys_seen:  # a repeat is acknowledged but not processed again
            cls.keys_seen.add(key)
            cls.processed.append(json.loads(body))
            cls.arrived_at.append(time.time())
        else:
            cls.repeated.append(key)
        self.answer(204)


@pytest.fixture
def receiver_url() -> Iterator[str]:
    WorkOrders.reset(secret=SECRET)
    served = serve(WorkOrders)
    yield served.url
    served.stop()
