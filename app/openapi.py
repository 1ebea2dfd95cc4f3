"""The OpenAPI schema says every status an operation can answer, not only its success.

FastAPI documents 200/201/202 and 422 by itself.  The answers common to many operations are added
here from what each operation is: secured ones (a bearer token) can answer 401, those with a body
413 (over ``AUTOSLIM_MAX_BODY_BYTES``) and 400 (a body that is not JSON), every one 503 while the
database is unavailable, and ``POST /searches`` 503 while the message broker is.  A test checks
the served schema against the running app (schemathesis), so a status left out here fails there.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

ERROR = {
    "content": {
        "application/json": {
            "schema": {"type": "object", "properties": {"detail": {"description": "What went wrong."}}}
        }
    }
}
COMMON: dict[str, dict[str, Any]] = {
    "401": {"description": "Missing, unknown or revoked bearer token.", **ERROR},
    "400": {"description": "The body could not be read.", **ERROR},
    "413": {"description": "The body is larger than the server accepts.", **ERROR},
    "503": {"description": "The database or the message broker is unavailable; try again (see Retry-After).", **ERROR},
}


def document_security(app: FastAPI) -> None:
    """Serve a schema where each operation lists its 401 / 400 / 413 / 503 answers."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    add_common_responses(operation)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def add_common_responses(operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    wanted = ["503"]
    if operation.get("security"):
        wanted.append("401")
    if "requestBody" in operation:
        wanted += ["400", "413"]
    for code in wanted:
        responses.setdefault(code, COMMON[code])
