"""/weights: upload trained weights of a network (a state dict), list and inspect them.

A search names an upload (``"weights": ID``) to start its supernet from it.  Handlers are thin:
`app.weights_service` checks and stores, `app.weights_views` shapes the JSON.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status

from app import weights_service as service
from app.body_limit import SELF_LIMITED
from app.deps import CurrentUser, SessionDep, SettingsDep
from app.listing import Limit, Offset, Owner, page_out
from app.uploads import SpooledUpload, body_to_file
from app.weights_views import WeightsOut, WeightsPage, weights_out

router = APIRouter(prefix="/weights", tags=["weights"])
SELF_LIMITED.add(router.prefix)  # bounded by `weights_file` below (AUTOSLIM_MAX_WEIGHTS_BYTES), not the general limit

WEIGHTS_FILE = {
    "required": True,
    "description": "The file as saved: `torch.save(model.state_dict(), 'w.pt')` "
    "or safetensors' `save_file(model.state_dict(), 'w.safetensors')`.",
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
}


async def weights_file(request: Request, settings: SettingsDep) -> AsyncIterator[SpooledUpload]:
    """The body streamed to a file beside the stored weights, refused past AUTOSLIM_MAX_WEIGHTS_BYTES.
    Removed after the request unless kept: a request refused after the body was read (a bad query
    parameter, no token) must not leave it behind."""
    upload = await body_to_file(request, settings.max_weights_bytes, "a weights file", settings.weights_root)
    try:
        yield upload
    finally:
        upload.discard()  # kept uploads were renamed away already


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=WeightsOut,
    openapi_extra={"requestBody": WEIGHTS_FILE},
    responses={
        200: {"description": "The same bytes were uploaded before: that upload.", "model": WeightsOut},
        413: {"description": "Larger than AUTOSLIM_MAX_WEIGHTS_BYTES."},
        422: {"description": "Not a state dict (or not readable without unpickling code)."},
    },
)
def upload_weights(
    upload: Annotated[SpooledUpload, Depends(weights_file)],
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentUser,
    response: Response,
    name: Annotated[str | None, Query(max_length=200, description="A label.")] = None,
) -> WeightsOut:
    """Store trained weights of a network (201), or return the earlier upload of the same bytes (200)."""
    row, created = service.store(session, settings, user, upload, name)
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    response.headers["Location"] = f"/weights/{row.id}"
    return weights_out(row)


@router.get("", response_model=WeightsPage)
def list_weights(
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentUser,
    owner: Owner = None,
    limit: Limit = 20,
    offset: Offset = 0,
) -> WeightsPage:
    """Uploads newest first, paginated; users see their own, admins everyone's; an offset past
    `app.listing.MAX_OFFSET` is a 422 like the other listings'."""
    found = service.list_visible(session, user, owner, min(limit, settings.page_size_max), offset)
    return page_out(WeightsPage, found, weights_out, limit, offset)


@router.get(
    "/{weights_id}", response_model=WeightsOut, responses={404: {"description": "No such weights (or not yours)."}}
)
def get_weights(weights_id: str, session: SessionDep, user: CurrentUser) -> WeightsOut:
    """One upload."""
    return weights_out(service.get_visible(session, user, weights_id))
