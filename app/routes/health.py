"""Liveness for load balancers and compose health checks: the database and the broker answer."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from sqlalchemy import text

from app.deps import SessionDep
from app.migrate import current_revision, head_revision
from app.schemas import Health
from worker.celery_app import broker_ok

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
def health(request: Request, response: Response, session: SessionDep) -> Health:
    """Checks the database (reachable, migrated) and the broker; 503 when either is down."""
    try:
        session.execute(text("SELECT 1"))
        revision = current_revision(session.get_bind())
        database = "ok" if revision == head_revision() else f"at migration {revision}, need {head_revision()}"
    except Exception as err:  # noqa: BLE001 - reported, not raised
        database = f"{type(err).__name__}: {err}"
    broker = broker_ok(request.app.state.celery) or "ok"
    healthy = database == "ok" and broker == "ok"
    if not healthy:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Health(status="ok" if healthy else "unavailable", database=database, broker=broker)
