"""The FastAPI app factory: ``uvicorn --factory app.main:create_app``.

`create_app` owns the process's view of the world: settings, the database engine (checked to be
at the newest migration), and the Celery app used to enqueue.  More routers are mounted by adding
them to `ROUTERS`.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from app.body_limit import BodyLimit
from app.dashboard import routes as dashboard
from app.errors import add_error_handlers
from app.migrate import require_current
from app.openapi import document_security
from app.read_retry import RetryReads
from app.routes import downloads, health, latency_tables, metrics, searches, tokens, weights
from store.db import engine_for, session_factory
from store.settings import Settings, get_settings
from worker.celery_app import make_celery

ROUTERS: list[APIRouter] = [
    health.router,
    searches.router,
    tokens.router,
    downloads.router,
    metrics.router,
    latency_tables.router,
    weights.router,
    dashboard.router,
]

DESCRIPTION = """Channel-number search (AutoSlim) as a service.  POST a search, poll it, download the
per-layer channel counts for each MACs / latency budget.  Authenticate with `Authorization: Bearer <token>`
(`autoslim token create --name NAME`)."""


def create_app(settings: Settings | None = None, routers: list[APIRouter] | None = None) -> FastAPI:
    """An app on ``settings`` (default: the environment); refuses an unmigrated database."""
    settings = settings or get_settings()
    engine = engine_for(settings.db_url)
    require_current(engine)
    app = FastAPI(title="autoslim", version="0.1.0", description=DESCRIPTION)
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = session_factory(engine)
    app.state.celery = make_celery(settings)
    for router in ROUTERS if routers is None else routers:
        app.include_router(router)
    add_error_handlers(app)
    app.add_middleware(RetryReads)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    document_security(app)
    return app
