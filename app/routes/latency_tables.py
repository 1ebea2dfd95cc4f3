"""/latency-tables: upload a table profiled on a device, list, inspect, download and delete tables.

A search names a table (``"latency_table": ID``) to have its ``latency_ms`` budgets mean
milliseconds on that table's device and runtime.  Handlers are thin: `app.latency_table_service`
checks and stores, `app.latency_table_views` shapes the JSON.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import JSONResponse

from app import latency_table_service as service
from app.body_limit import SELF_LIMITED
from app.deps import CurrentUser, SessionDep, SettingsDep
from app.latency_table_views import LatencyTableOut, LatencyTablePage, table_out
from app.listing import Limit, Offset, Owner, page_out
from app.uploads import body_bytes

router = APIRouter(prefix="/latency-tables", tags=["latency tables"])
SELF_LIMITED.add(router.prefix)  # bounded by `table_file` below, not the general limit

UNKNOWN = {404: {"description": "No such latency table (or not yours)."}}
TABLE_FILE = {
    "required": True,
    "description": "The JSON file `autoslim profile` wrote, as it is.",
    "content": {"application/json": {"schema": {"type": "object"}}},
}


async def table_file(request: Request) -> bytes:
    """The raw request body, refused past `service.MAX_TABLE_BYTES` before it is read in full."""
    return await body_bytes(request, service.MAX_TABLE_BYTES, "a latency table")


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=LatencyTableOut,
    openapi_extra={"requestBody": TABLE_FILE},
    responses={
        413: {"description": "Larger than any table."},
        422: {
            "description": "Not a table, truncated, or not of the network its key names; `loc` points into the file."
        },
    },
)
def upload_table(
    raw: Annotated[bytes, Depends(table_file)],
    session: SessionDep,
    user: CurrentUser,
    response: Response,
    name: Annotated[str | None, Query(max_length=200, description="A label, e.g. the device.")] = None,
) -> LatencyTableOut:
    """Store a table profiled on a device (`autoslim profile ... --out table.json`), checked against its network."""
    row = service.upload(session, user, raw, name)
    response.headers["Location"] = f"/latency-tables/{row.id}"
    return table_out(row)


@router.get("", response_model=LatencyTablePage)
def list_tables(
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentUser,
    owner: Owner = None,
    limit: Limit = 20,
    offset: Offset = 0,
) -> LatencyTablePage:
    """Tables newest first, paginated; users see their own, admins everyone's."""
    found = service.list_visible(session, user, owner, min(limit, settings.page_size_max), offset)
    return page_out(LatencyTablePage, found, table_out, limit, offset)


@router.get("/{table_id}", response_model=LatencyTableOut, responses=UNKNOWN)
def get_table(table_id: str, session: SessionDep, user: CurrentUser) -> LatencyTableOut:
    """The network, device, runtime and predicted latency range of one table."""
    return table_out(service.get_visible(session, user, table_id))


@router.get("/{table_id}/file", responses={**UNKNOWN, 200: {"content": {"application/json": {}}}})
def download_table(table_id: str, session: SessionDep, user: CurrentUser) -> JSONResponse:
    """The table file itself (the uploaded JSON)."""
    row = service.get_visible(session, user, table_id)
    return JSONResponse(
        row.data, headers={"Content-Disposition": f'attachment; filename="latency-table-{row.id}.json"'}
    )


@router.delete(
    "/{table_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**UNKNOWN, 409: {"description": "A queued or running search still uses it."}},
)
def delete_table(table_id: str, session: SessionDep, user: CurrentUser) -> Response:
    """Delete a table (finished searches keep the device and runtime beside their figures)."""
    service.delete(session, service.get_visible(session, user, table_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
