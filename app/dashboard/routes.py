"""/admin: the server-rendered dashboard (list of searches, one search's page, login).

Pages render from the database on each request; two small JSON endpoints feed the pages' polling
script so status and progress stay live without a reload.  Cancel and retry go through the same
`app.search_service` functions as the API's POST endpoints, from forms (cookie login cannot send a
bearer header), and come back to the page they were pressed on.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, HTTPException, Query, Request, status
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy import select

from app import search_service as service
from app.auth import authenticate
from app.dashboard import queries, search_page
from app.dashboard.auth import COOKIE, DashboardAdmin, check_csrf, safe_next
from app.dashboard.sessions import open_session, revoke_session
from app.dashboard.templating import TEMPLATES, templates
from app.deps import SessionDep, SettingsDep
from app.listing import MAX_OFFSET
from app.routes.downloads import ModelFormat, model_response, pick_budget
from app.search_service import Conflict, QueueUnavailable
from store.tables import Search, Status

router = APIRouter(prefix="/admin", tags=["dashboard"], include_in_schema=False)
STATIC = {"dashboard.css": "text/css", "live.js": "text/javascript"}
PAGE_SIZE = 50


@router.get("", response_class=HTMLResponse)
def search_list(
    request: Request,
    session: SessionDep,
    admin: DashboardAdmin,
    status_: Annotated[Status | None, Query(alias="status")] = None,
    owner: Annotated[str | None, Query(max_length=100)] = None,
    arch: Annotated[str | None, Query(max_length=64)] = None,
    dataset: Annotated[str | None, Query(max_length=500)] = None,
    sort: Annotated[queries.SortKey, Query()] = "created",
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    message: str | None = None,
) -> HTMLResponse:
    """Every search, filtered and sorted, newest first by default."""
    query = queries.ListQuery(
        status_, owner or None, arch or None, dataset or None, sort, order == "desc", PAGE_SIZE, offset
    )
    rows, total = queries.list_searches(session, query)
    filters = {
        "status": status_.value if status_ else "",
        "owner": owner or "",
        "arch": arch or "",
        "dataset": dataset or "",
    }
    return templates().TemplateResponse(
        request,
        "searches.html",
        {
            "admin": admin,
            "rows": rows,
            "total": total,
            "query": query,
            "filters": filters,
            "choices": queries.filter_choices(session),
            "statuses": [s.value for s in Status],
            "sort_links": {
                key: _list_url(filters, key, "asc" if sort == key and order == "desc" else "desc")
                for key in queries.SORT_KEYS
            },
            "page_links": _page_links(filters, sort, order, offset, total),
            "q": queries,
            "message": message,
            "csrf": request.state.csrf,
            "back": str(request.url.path) + (f"?{request.url.query}" if request.url.query else ""),
        },
    )


def _list_url(filters: dict[str, str], sort: str, order: str, offset: int = 0) -> str:
    params = {k: v for k, v in filters.items() if v} | {"sort": sort, "order": order}
    return "/admin?" + urlencode(params | ({"offset": offset} if offset else {}))


def _page_links(filters: dict[str, str], sort: str, order: str, offset: int, total: int) -> dict[str, str | None]:
    return {
        "previous": _list_url(filters, sort, order, max(0, offset - PAGE_SIZE)) if offset > 0 else None,
        "next": _list_url(filters, sort, order, offset + PAGE_SIZE) if offset + PAGE_SIZE < total else None,
    }


@router.get("/status", response_class=JSONResponse)
def list_status(
    session: SessionDep, admin: DashboardAdmin, ids: Annotated[str, Query(max_length=33 * 100)] = ""
) -> dict[str, Any]:
    """Live status of the listed searches (the list page polls this while any is active)."""
    wanted = [i for i in ids.split(",") if i][:100]
    rows = session.scalars(select(Search).where(Search.id.in_(wanted))) if wanted else []
    return {s.id: search_page.live_progress(s) for s in rows}


@router.get("/searches/{search_id}", response_class=HTMLResponse)
def search_detail(
    request: Request, search_id: str, session: SessionDep, admin: DashboardAdmin, message: str | None = None
) -> HTMLResponse:
    """One search: live progress, accuracy curve, channel bars, downloads, event log."""
    search = service.get_visible(session, admin, search_id)
    steps = service.trajectory(session, search.id)
    base = f"/admin/searches/{search.id}"
    return templates().TemplateResponse(
        request,
        "search.html",
        {
            "admin": admin,
            "s": search,
            "q": queries,
            "live": search_page.live_progress(search),
            "chart": search_page.accuracy_chart(search, steps),
            "steps": len(steps),
            "budgets": search_page.budget_views(search, base) if search.status == Status.succeeded else [],
            "events": service.events(session, search.id, 500),
            "message": message,
            "csrf": request.state.csrf,
            "back": base,
            "requested": queries.requested_labels(search),
        },
    )


@router.get("/searches/{search_id}/live", response_class=JSONResponse)
def search_live(search_id: str, session: SessionDep, admin: DashboardAdmin) -> dict[str, Any]:
    """The search page polls this for phase, epoch, percent and ETA."""
    return search_page.live_progress(service.get_visible(session, admin, search_id))


@router.get("/searches/{search_id}/config", response_class=JSONResponse)
def search_config(
    search_id: str,
    session: SessionDep,
    admin: DashboardAdmin,
    macs: str | None = None,
    latency_ms: str | None = None,
    params: str | None = None,
) -> Response:
    """One budget's channel config, as a JSON file download."""
    search = service.get_visible(session, admin, search_id)
    result = pick_budget(search, {"macs": macs, "latency_ms": latency_ms, "params": params})
    name = f"{search.arch}-{result.kind}-{result.target:g}-config.json"
    return JSONResponse(result.config, headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/searches/{search_id}/model", response_class=FileResponse)
def search_model(
    search_id: str,
    session: SessionDep,
    admin: DashboardAdmin,
    macs: str | None = None,
    latency_ms: str | None = None,
    params: str | None = None,
    format: ModelFormat = "pt",
) -> FileResponse:
    """The same download as ``GET /searches/{id}/model``, for a logged-in browser."""
    search = service.get_visible(session, admin, search_id)
    result = pick_budget(search, {"macs": macs, "latency_ms": latency_ms, "params": params})
    return model_response(search, result, format)


@router.post("/searches/{search_id}/{action}")
def search_action(
    request: Request,
    search_id: str,
    action: str,
    session: SessionDep,
    settings: SettingsDep,
    admin: DashboardAdmin,
    csrf: Annotated[str | None, Form()] = None,
    back: Annotated[str | None, Form()] = None,
) -> RedirectResponse:
    """Cancel or retry, then back to the page the button was on with what happened."""
    if action not in ("cancel", "retry"):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no action {action}")
    check_csrf(request, csrf)
    search = service.get_visible(session, admin, search_id)
    try:
        if action == "cancel":
            service.cancel(session, search, admin)
            message = "cancel requested" if search.status == Status.running else f"search is {search.status}"
        else:
            service.retry(session, request.app.state.celery, settings, search, admin)
            message = "queued again; it continues from its checkpoints"
    except (Conflict, QueueUnavailable) as err:  # the page says why (a 503's search is sent later)
        message = str(err)
    target = safe_next(back)
    return RedirectResponse(
        f"{target}{'&' if '?' in target else '?'}{urlencode({'message': message})}", status.HTTP_303_SEE_OTHER
    )


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/admin") -> HTMLResponse:
    return templates().TemplateResponse(request, "login.html", {"next": safe_next(next), "error": None})


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    token: Annotated[str, Form(max_length=200)],
    next: Annotated[str, Form(max_length=2000)] = "/admin",
) -> Response:
    """Check an admin token and open a session, whose secret (not the token) goes in an HttpOnly
    cookie for the dashboard's paths only."""
    user = authenticate(session, token.strip())
    if user is None or not user.is_admin:
        error, code = (
            ("unknown or revoked token", status.HTTP_401_UNAUTHORIZED)
            if user is None
            else ("this token is not an admin token", status.HTTP_403_FORBIDDEN)
        )
        return templates().TemplateResponse(
            request, "login.html", {"next": safe_next(next), "error": error}, status_code=code
        )
    response = RedirectResponse(safe_next(next), status.HTTP_303_SEE_OTHER)
    response.set_cookie(
        COOKIE,
        open_session(session, user, settings.session_hours),
        max_age=int(settings.session_hours * 3600),
        path="/admin",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
def logout(request: Request, session: SessionDep) -> RedirectResponse:
    """End the session for good (a copy of the cookie stops working too) and forget the cookie."""
    if request.cookies.get(COOKIE):
        revoke_session(session, request.cookies[COOKIE])
    response = RedirectResponse("/admin/login", status.HTTP_303_SEE_OTHER)
    response.delete_cookie(COOKIE, path="/admin")
    return response


@router.get("/static/{name}")
def static(name: str) -> FileResponse:
    """The stylesheet and the polling script (a fixed list: no path from the URL reaches the disk)."""
    if name not in STATIC:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such file")
    return FileResponse(
        TEMPLATES.parent / "static" / name, media_type=STATIC[name], headers={"Cache-Control": "max-age=300"}
    )
