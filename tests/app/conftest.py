"""API fixtures: one fresh migrated backend per session (see `app.testing`), clients with tokens.

No worker runs here: searches stay queued, which is all the API tests need; tests/worker runs real
workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.auth import create_token
from app.main import create_app
from app.migrate import upgrade
from app.testing import fresh_backend
from store.db import engine_for, session_scope
from store.settings import Settings


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root holding a tiny ImageFolder tree (3 class folders) and an empty folder."""
    root = tmp_path_factory.mktemp("data")
    for name in ("cat", "dog", "fox"):
        (root / "pets" / name).mkdir(parents=True)
    (root / "empty").mkdir()
    return root


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Iterator[Settings]:
    with fresh_backend(tmp_path_factory.mktemp("backend"), data_roots=[data_root]) as settings:
        upgrade(engine_for(settings.db_url))
        yield settings


@pytest.fixture(scope="session")
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


def _token(app: FastAPI, name: str, admin: bool = False) -> str:
    with session_scope(app.state.engine) as session:
        return create_token(session, name, admin=admin)


@pytest.fixture(scope="session")
def tokens(app: FastAPI) -> dict[str, str]:
    return {"alice": _token(app, "alice"), "bob": _token(app, "bob"), "admin": _token(app, "root", admin=True)}


class Client(TestClient):
    """A test client that sends one user's bearer token."""

    def __init__(self, app: FastAPI, token: str | None) -> None:
        super().__init__(app, headers={"Authorization": f"Bearer {token}"} if token else {})


@pytest.fixture(scope="session")
def alice(app: FastAPI, tokens: dict[str, str]) -> Client:
    return Client(app, tokens["alice"])


@pytest.fixture(scope="session")
def bob(app: FastAPI, tokens: dict[str, str]) -> Client:
    return Client(app, tokens["bob"])


@pytest.fixture(scope="session")
def admin(app: FastAPI, tokens: dict[str, str]) -> Client:
    return Client(app, tokens["admin"])


@pytest.fixture(scope="session")
def anonymous(app: FastAPI) -> Client:
    return Client(app, None)


@pytest.fixture
def valid() -> dict:
    """A valid request body (MobileNetV2 x0.35 at 32 px reaches 1.02M..4.75M MACs)."""
    return {"arch": "mobilenet_v2", "dataset": "digits", "width_mult": 0.35, "macs": ["2M"]}


FINISHED_SEARCH = {
    "arch": "resnet18",
    "dataset": "digits",
    "input_size": 16,
    "width_mult": 0.25,
    "macs": ["8.4M", "7.5M"],
    "train": {"epochs": 1, "batch_size": 128, "num_sandwich": 2, "warmup_epochs": 0},
    "search": {"bins": 4, "score_size": 64, "calib_size": 64, "calib_batch_size": 64},
    "export_formats": ["pt", "onnx"],
}
"""A search of seconds (ResNet-18 x0.25 at 16 px, one epoch), with the network and bins of tests/engine,
so the latency table measured here serves those tests too, through the shared cache below."""


@pytest.fixture(scope="session")
def finished_recipe() -> dict:
    """`FINISHED_SEARCH`, for test modules (they cannot import this file): searches with its recipe reuse its supernet."""
    return FINISHED_SEARCH


@pytest.fixture(scope="session")
def run_here(app: FastAPI, settings: Settings, cache_root: Path):
    """Submit a search as ``client`` on the gpu queue (which no worker of tests/app consumes) and run
    it to the end with the worker's own task code (`worker.tasks.execute`: claim, `engine.run_search`,
    progress and result rows) in this process, with the suite's caches; returns its detail."""
    from worker.tasks import execute

    caches = {"supernet_cache": cache_root / "supernets", "latency_cache": cache_root / "latency"}

    def run(client: Client, body: dict) -> dict:
        created = client.post("/searches", json={**body, "queue": "gpu"})
        assert created.status_code == 202, created.text
        outcome = execute(settings.model_copy(update=caches), created.json()["id"])
        detail = client.get(f"/searches/{created.json()['id']}").json()
        assert outcome == "succeeded", detail.get("error")
        return detail

    return run


@pytest.fixture(scope="session")
def finished_search(admin: Client, run_here) -> dict:
    """A real search on the digits, submitted through the API and run by the worker's task code."""
    return run_here(admin, FINISHED_SEARCH)
