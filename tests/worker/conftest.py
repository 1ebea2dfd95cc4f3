"""Worker fixtures: a fresh migrated backend per session and real ``autoslim worker`` processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from app.auth import User, create_token
from app.main import create_app
from app.migrate import upgrade
from app.schemas import SearchCreate
from app.search_service import submit
from app.testing import WorkerProcess, fresh_backend
from store.db import engine_for, session_scope
from store.settings import Settings
from store.tables import Search


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with fresh_backend(tmp_path_factory.mktemp("backend"), max_attempts=3) as settings:
        upgrade(engine_for(settings.db_url))
        yield settings


@pytest.fixture(scope="session")
def engine(settings: Settings):  # noqa: ANN201 - a SQLAlchemy Engine
    return engine_for(settings.db_url)


@pytest.fixture(scope="session")
def app(settings: Settings):  # noqa: ANN201 - a FastAPI app
    return create_app(settings)


@pytest.fixture(scope="session")
def client(app) -> TestClient:  # noqa: ANN001
    with session_scope(app.state.engine) as session:
        token = create_token(session, "tester")
    return TestClient(app, headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
def queued(app, settings: Settings) -> Iterator[Callable[..., str]]:  # noqa: ANN001
    """Store and enqueue a search directly (no HTTP); returns its id.  Afterwards the searches a test
    left queued or running are cancelled, so no worker or reaper of a later test takes them up."""
    made: list[str] = []

    def make(**fields) -> str:
        body = SearchCreate.model_validate(
            {"arch": "mobilenet_v2", "dataset": "digits", "width_mult": 0.35, "macs": ["2M"], **fields}
        )
        with session_scope(app.state.engine) as session:
            search, _ = submit(session, app.state.celery, settings, User("tester", "user", 0), body)
            made.append(search.id)
            return search.id

    yield make
    with session_scope(app.state.engine) as session:
        session.execute(
            update(Search)
            .where(Search.id.in_(made), Search.status.in_(("queued", "running")))
            .values(status="cancelled", claim_id=None)
        )


@pytest.fixture(scope="session")
def start_worker(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start ``autoslim worker`` processes; all are stopped at the end of the session."""
    started: list[WorkerProcess] = []
    logs = tmp_path_factory.mktemp("worker-logs")

    def start(queue: str = "cpu", **overrides) -> WorkerProcess:
        """A worker on ``queue``; ``overrides`` change its settings (e.g. ``worker_gpus="cpu:2"``)."""
        worker = WorkerProcess(
            settings.model_copy(update=overrides), Path(logs) / f"worker-{len(started)}-{queue}.log", queue
        )
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def own_workers(start_worker: Callable[..., WorkerProcess]) -> Iterator[Callable[..., WorkerProcess]]:
    """Workers for one test only, stopped when it ends: a later test's workers on the same queue
    (``gpu``, which the session's shared worker does not serve) are then alone on it."""
    mine: list[WorkerProcess] = []

    def start(queue: str = "gpu", **overrides) -> WorkerProcess:
        mine.append(start_worker(queue, **overrides))
        return mine[-1]

    yield start
    for worker in mine:
        worker.stop()
