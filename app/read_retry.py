"""A read that lost its database connection is run once more before the client sees a 503.

A dropped connection (database restart, failover, ``pg_terminate_backend``) fails the request that
was using it; the pool then opens a fresh one (``pool_pre_ping``), so running the same GET again
almost always succeeds.  Only reads are retried (running one twice changes nothing), only once,
and only when the 503 came from the database handler (`app.errors.database_unavailable` marks the
request), never for a 503 the handler meant for the client.
"""

from __future__ import annotations

from typing import Any

from app.body_limit import ASGIApp, Message, Receive, Scope, Send

RETRIED_METHODS = ("GET", "HEAD")
DROPPED = "autoslim_db_dropped"
"""Key in the request's ASGI state set by the 503 handler for a lost connection."""


class RetryReads:
    """ASGI middleware: a GET answered 503 for a lost database connection is run once more."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in RETRIED_METHODS:
            await self.app(scope, receive, send)
            return
        first: dict[str, Any] = {**scope, "state": dict(scope.get("state") or {})}
        swallowed = False

        async def unless_dropped(message: Message) -> None:
            """Pass the answer on as it streams (downloads are large), unless it is the 503 of a
            dropped connection: that one is swallowed and the request run again."""
            nonlocal swallowed
            if message["type"] == "http.response.start":
                swallowed = message["status"] == 503 and bool(first["state"].get(DROPPED))
            if not swallowed:
                await send(message)

        await self.app(first, receive, unless_dropped)
        if swallowed:
            await self.app({**scope, "state": dict(scope.get("state") or {})}, receive, send)
