"""/searches: submit, list, inspect, fetch configs and trajectory, cancel, retry.

Handlers are thin: `app.search_service` decides, `app.search_views` shapes the JSON.  Errors are
raised as `FieldError` (422), `NotFound` (404) and `Conflict` (409) and turned into responses by
the handlers registered in `app.main`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response, status

from app import search_service as service
from app import search_views as views
from app.deps import CurrentUser, SessionDep, SettingsDep
from app.listing import Limit, Offset, Owner, page_out
from app.schemas import ConfigSet, EventOut, SearchCreate, SearchCreated, SearchDetail, SearchPage, Trajectory
from store.tables import Status

router = APIRouter(prefix="/searches", tags=["searches"])

NOT_FINISHED = {
    409: {
        "description": "The search has not succeeded (yet); the body gives its status.",
        "content": {"application/json": {"example": {"detail": "search is running", "status": "running"}}},
    }
}
UNKNOWN = {404: {"description": "No such search (or not yours)."}}


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=SearchCreated)
def create_search(
    request: Request,
    body: SearchCreate,
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentUser,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> SearchCreated:
    """Validate and queue a search; the same Idempotency-Key returns the same search."""
    search, created = service.submit(session, request.app.state.celery, settings, user, body, idempotency_key)
    response.headers["Location"] = f"/searches/{search.id}"
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return SearchCreated(id=search.id, status=search.status, links=views.links(search.id))


@router.get("", response_model=SearchPage)
def list_searches(
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentUser,
    status_: Annotated[Status | None, Query(alias="status")] = None,
    owner: Owner = None,
    limit: Limit = 20,
    offset: Offset = 0,
) -> SearchPage:
    """Searches newest first, paginated; users see their own, admins everyone's."""
    found = service.list_visible(session, user, status_, owner, min(limit, settings.page_size_max), offset)
    return page_out(SearchPage, found, views.summary, limit, offset)


@router.get("/{search_id}", response_model=SearchDetail, responses=UNKNOWN)
def get_search(search_id: str, session: SessionDep, user: CurrentUser) -> SearchDetail:
    """Status, phase, percent, ETA, timings, error and a summary per budget."""
    return views.detail(service.get_visible(session, user, search_id))


@router.get("/{search_id}/config", responses={**UNKNOWN, **NOT_FINISHED, 200: {"model": ConfigSet}})
def get_config(
    search_id: str,
    session: SessionDep,
    user: CurrentUser,
    macs: Annotated[str | None, Query(description="One MACs budget, e.g. 2M or 2000000.")] = None,
    latency_ms: Annotated[str | None, Query()] = None,
    params: Annotated[str | None, Query()] = None,
) -> Any:
    """The channel config of one budget (a `ChannelConfig` JSON), or of every budget."""
    search = service.get_visible(session, user, search_id)
    asked = {"macs": macs, "latency_ms": latency_ms, "params": params}
    if not any(asked.values()):  # empty query strings count as absent
        if search.status != Status.succeeded:
            raise service.Conflict(f"search is {search.status}; configs exist once it has succeeded", search.status)
        return ConfigSet(search_id=search.id, budgets=[views.budget_config(r) for r in search.budgets])
    return service.budget_result(search, asked).config


@router.get("/{search_id}/trajectory", response_model=Trajectory, responses=UNKNOWN)
def get_trajectory(search_id: str, session: SessionDep, user: CurrentUser) -> Trajectory:
    """Every greedy slimming step so far: MACs, params and held-out accuracy after each removal."""
    search = service.get_visible(session, user, search_id)
    return Trajectory(
        search_id=search.id,
        status=search.status,
        steps=[views.trajectory_point(s) for s in service.trajectory(session, search.id)],
    )


@router.get("/{search_id}/events", response_model=list[EventOut], responses=UNKNOWN)
def get_events(
    search_id: str, session: SessionDep, user: CurrentUser, limit: Annotated[int, Query(ge=1, le=1000)] = 200
) -> list[EventOut]:
    """The search's log: submitted, claimed, phases, requeues, the end."""
    search = service.get_visible(session, user, search_id)
    return [EventOut.model_validate(e, from_attributes=True) for e in service.events(session, search.id, limit)]


@router.post(
    "/{search_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=SearchDetail,
    responses={**UNKNOWN, **NOT_FINISHED},
)
def cancel_search(search_id: str, session: SessionDep, user: CurrentUser) -> SearchDetail:
    """Stop a queued or running search; what it found so far is kept."""
    search = service.get_visible(session, user, search_id)
    return views.detail(service.cancel(session, search, user))


@router.post(
    "/{search_id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=SearchDetail,
    responses={**UNKNOWN, **NOT_FINISHED},
)
def retry_search(
    search_id: str, request: Request, session: SessionDep, settings: SettingsDep, user: CurrentUser
) -> SearchDetail:
    """Queue a failed or cancelled search again; it continues from its checkpoints."""
    search = service.get_visible(session, user, search_id)
    return views.detail(service.retry(session, request.app.state.celery, settings, search, user))
