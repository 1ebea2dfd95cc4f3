"""The app's error responses: 422 naming the field, 404, 409, and 503 when a backing service is down.

No handler echoes large or non-JSON input: a validation error keeps the offending input only when
it is a short string or a finite number (a 50 MB field, ``NaN`` or ``1e999`` is left out), so the
error response itself can never fail to encode or cost what the request cost.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError

from app.listing import NotFound
from app.search_service import Conflict, QueueUnavailable
from app.spec_validation import FieldError

log = logging.getLogger(__name__)
ECHO_MAX_CHARS = 100
"""Inputs up to this long are echoed in a 422 (they help the caller); longer ones are not."""
RETRY_AFTER_S = "10"


def add_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(FieldError, field_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(NotFound, not_found)
    app.add_exception_handler(Conflict, conflict)
    app.add_exception_handler(QueueUnavailable, queue_unavailable)
    app.add_exception_handler(OperationalError, database_unavailable)
    app.add_exception_handler(DBAPIError, database_unavailable)


def field_error(_: Request, err: FieldError) -> JSONResponse:
    detail = [{"type": "value_error", "loc": list(err.loc), "msg": err.message}]
    return JSONResponse({"detail": detail}, status.HTTP_422_UNPROCESSABLE_CONTENT)


def validation_error(_: Request, err: RequestValidationError) -> JSONResponse:
    return JSONResponse({"detail": [safe_error(e) for e in err.errors()]}, status.HTTP_422_UNPROCESSABLE_CONTENT)


def safe_error(error: dict[str, Any]) -> dict[str, Any]:
    """One pydantic error as JSON: type, loc, msg, and the input only when it is small and finite."""
    out: dict[str, Any] = {
        "type": str(error.get("type", "value_error")),
        "loc": [p if isinstance(p, (int, str)) else str(p) for p in error.get("loc", ())],
        "msg": _short(str(error.get("msg", "")), 500),
    }
    value = error.get("input")
    if value is None or isinstance(value, bool) or (isinstance(value, int) and abs(value) < 10**18):
        out["input"] = value
    elif isinstance(value, float) and math.isfinite(value):
        out["input"] = value
    elif isinstance(value, str) and len(value) <= ECHO_MAX_CHARS:
        out["input"] = value
    return out


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def not_found(_: Request, err: NotFound) -> JSONResponse:
    return JSONResponse({"detail": str(err)}, status.HTTP_404_NOT_FOUND)


def conflict(_: Request, err: Conflict) -> JSONResponse:
    return JSONResponse({"detail": str(err), "status": err.status}, status.HTTP_409_CONFLICT)


def queue_unavailable(_: Request, err: QueueUnavailable) -> JSONResponse:
    """The search is stored; only its message could not be sent (a worker's dispatcher sends it later)."""
    return JSONResponse(
        {"detail": str(err), "id": err.search_id},
        status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": RETRY_AFTER_S, "Location": f"/searches/{err.search_id}"},
    )


def database_unavailable(request: Request, err: DBAPIError) -> JSONResponse:
    """A lost database connection (restart, failover, ``pg_terminate_backend``): 503, try again.
    Other database errors are bugs and stay 500s."""
    if isinstance(err, OperationalError) or err.connection_invalidated:
        request.state.autoslim_db_dropped = True  # `app.read_retry.RetryReads` runs a GET once more
        log.warning("database unavailable during %s %s: %s", request.method, request.url.path, err.orig)
        return JSONResponse(
            {"detail": "the database is unavailable; try again in a moment"},
            status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": RETRY_AFTER_S},
        )
    raise err
