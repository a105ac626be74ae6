"""What the API checks before anything reads a request's body.

A request to ``/api/`` without a known bearer token is refused from its headers alone, so
an anonymous client cannot make the collector buffer or parse a byte of what it sends.
Every body is then read here, up to ``max_body_bytes`` and within ``body_timeout_s``,
before the application sees it: a declared ``Content-Length`` over the limit is refused
at once, a chunked body as soon as it passes the limit, so memory per request is bounded
by the limit and never by what a client chooses to send. Refusals close the connection,
since the rest of the body was never read.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections import Counter
from collections.abc import Mapping

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PROTECTED_PREFIX = "/api/"


class Refused(Exception):
    """A request the API answers with ``status`` before it goes any further."""

    def __init__(self, status: int, detail: str, headers: Mapping[str, str] | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = dict(headers or {})


class _ClientGone(Exception):
    pass


class Tokens:
    """The bearer tokens the API knows, by the name of the integration holding each."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        self._known = {name: token.encode() for name, token in tokens.items()}

    def caller(self, authorization: str) -> str:
        """The integration an ``Authorization`` header belongs to; Refused (401 or 403)."""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Refused(401, "bearer token required", {"WWW-Authenticate": "Bearer"})
        offered = token.encode()
        for name, expected in self._known.items():
            if hmac.compare_digest(offered, expected):
                return name
        raise Refused(403, "unknown token")


class RequestGuard:
    """ASGI middleware: credentials from the headers first, then a bounded body.

    ``refused`` counts what it turned away, by status, for /metrics."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        tokens: Tokens,
        max_body_bytes: int,
        body_timeout_s: float,
        refused: Counter[int] | None = None,
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.refused = refused if refused is not None else Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            self._check_headers(scope)
            async with asyncio.timeout(self.body_timeout_s):
                body = await self._read_body(receive)
        except Refused as refused:
            self.refused[refused.status] += 1
            await _refuse(send, refused)
            return
        except TimeoutError:
            self.refused[408] += 1
            await _refuse(send, Refused(408, "request body not received in time"))
            return
        except _ClientGone:
            return
        await self.app(scope, _replay(body, receive), send)

    def _check_headers(self, scope: Scope) -> None:
        headers = Headers(scope=scope)
        if str(scope["path"]).startswith(PROTECTED_PREFIX):
            self.tokens.caller(headers.get("authorization", ""))
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise Refused(400, "invalid Content-Length")
            if int(declared) > self.max_body_bytes:
                raise Refused(413, f"request body over {self.max_body_bytes} bytes")

    async def _read_body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise Refused(413, f"request body over {self.max_body_bytes} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body as one message, then the server's own messages (a disconnect)."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _refuse(send: Send, refused: Refused) -> None:
    content = json.dumps({"detail": refused.detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(content)).encode()),
        # what is left of the body is never read: the connection cannot carry another request
        (b"connection", b"close"),
        *((k.lower().encode(), v.encode()) for k, v in refused.headers.items()),
    ]
    await send({"type": "http.response.start", "status": refused.status, "headers": headers})
    await send({"type": "http.response.body", "body": content})
