"""Refuse request bodies over a size limit (413) before they are read into memory.

FastAPI reads a whole body before validating it, and a 422 used to echo it back: a 50 MB body cost
50 MB twice.  This ASGI middleware answers 413 at once when ``Content-Length`` is over the limit,
and counts the bytes of a chunked body as they arrive, stopping at the limit.  Routes that take
file uploads (latency tables, weights) bound their bodies themselves with their own limits
(`app.uploads.limited_body`) and list their path in ``SELF_LIMITED``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.exceptions import HTTPException

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SELF_LIMITED: set[str] = set()
"""Paths whose routes bound their own bodies (uploads larger than the general limit)."""


class BodyTooLarge(HTTPException):
    """Raised inside ``receive`` when a chunked body passes the limit; an HTTPException, so FastAPI's
    body reading passes it on unchanged and the app's exception middleware sends the 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, too_large(limit))


class BodyLimit:
    """ASGI middleware: 413 for a body over ``limit`` bytes, except on the `SELF_LIMITED` paths."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "").rstrip("/") in SELF_LIMITED:
            await self.app(scope, receive, send)
            return
        limit = self.limit
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await _too_large(send, limit)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)


def too_large(limit: int) -> str:
    return f"the request body is larger than {limit} bytes"


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps({"detail": too_large(limit)}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
