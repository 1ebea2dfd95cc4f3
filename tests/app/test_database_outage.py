"""Reads while the database drops connections (``pg_terminate_backend``, as a restart or failover
does): each answer is the page or a 503 that says to try again, never a 500.  Postgres only: SQLite
has no server to drop a connection."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from app.testing import POSTGRES_ADMIN_URL


@pytest.fixture
def killer(settings):  # noqa: ANN001, ANN201 - a function that drops the app's connections
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("needs Postgres (AUTOSLIM_TEST_BACKEND=postgres-redis)")
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    database = settings.database_url.rsplit("/", 1)[-1]

    def kill() -> int:
        with admin.connect() as conn:
            return len(
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :db AND pid <> pg_backend_pid()"
                    ),
                    {"db": database},
                ).all()
            )

    yield kill
    admin.dispose()


def test_reads_during_connection_kills_are_answered_or_503(app, tokens, alice, valid, killer):
    search_id = alice.post("/searches", json=valid).json()["id"]
    client = TestClient(app, headers={"Authorization": f"Bearer {tokens['alice']}"}, raise_server_exceptions=False)
    stop, kills = threading.Event(), Counter()

    def keep_killing() -> None:
        while not stop.is_set():
            kills["rounds"] += 1
            kills["connections"] += killer()
            stop.wait(0.05)

    thread = threading.Thread(target=keep_killing, daemon=True)
    thread.start()
    try:
        codes = Counter(
            client.get(path).status_code for _ in range(60) for path in ("/searches", f"/searches/{search_id}")
        )
    finally:
        stop.set()
        thread.join()
    print(f"kills: {dict(kills)}, answers: {dict(codes)}")
    assert kills["connections"] > 0, "no connection was killed: the test proves nothing"
    assert set(codes) <= {200, 503}, codes
    assert codes[200] > 0
    assert client.get(f"/searches/{search_id}").status_code == 200  # recovered once the kills stop


def test_a_read_that_lost_its_connection_runs_once_more_and_a_write_does_not():
    """`RetryReads` on an app whose first database call of each request fails as a dropped
    connection does: a GET succeeds on its second run, a POST gets the 503, a GET failing twice too."""
    from fastapi import FastAPI
    from sqlalchemy.exc import OperationalError

    from app.errors import add_error_handlers
    from app.read_retry import RetryReads

    runs: Counter = Counter()
    app = FastAPI()

    @app.get("/flaky")
    @app.post("/flaky")
    def flaky() -> dict:
        runs["flaky"] += 1
        if runs["flaky"] % 2:
            raise OperationalError("SELECT 1", {}, Exception("terminating connection due to administrator command"))
        return {"ok": True}

    @app.get("/down")
    def down() -> dict:
        runs["down"] += 1
        raise OperationalError("SELECT 1", {}, Exception("server closed the connection"))

    add_error_handlers(app)
    app.add_middleware(RetryReads)
    client = TestClient(app, raise_server_exceptions=False)
    assert client.get("/flaky").json() == {"ok": True} and runs["flaky"] == 2
    assert client.post("/flaky").status_code == 503 and runs["flaky"] == 3
    response = client.get("/down")
    assert response.status_code == 503 and runs["down"] == 2 and response.headers["Retry-After"]
