"""The service as its operators run it, for the service benchmarks: a fresh Postgres database (and
Redis prefix), the API under uvicorn in its own processes, workers as ``autoslim worker``.

Built on `app.testing` (the test suite's fresh backends and worker processes), so the benchmarks
exercise exactly what the tests do, over real HTTP.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from app.auth import create_token
from app.embedded import die_with_parent
from app.migrate import upgrade
from app.testing import BACKEND_ENV, fresh_backend, settings_env
from store.db import engine_for, session_scope
from store.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def postgres_backend(folder: Path, **overrides) -> Iterator[tuple[Settings, str]]:  # noqa: ANN003
    """(settings, admin token) on a new migrated Postgres database and Redis prefix, dropped afterwards."""
    os.environ[BACKEND_ENV] = "postgres-redis"
    with fresh_backend(folder) as base:
        settings = base.model_copy(update=overrides)  # may name another broker than the shared Redis
        engine = engine_for(settings.db_url)
        upgrade(engine)
        with session_scope(engine) as session:
            token = create_token(session, "bench", admin=True)
        yield settings, token


@contextmanager
def api_server(settings: Settings, workers: int = 1, log: Path | None = None) -> Iterator[str]:
    """``uvicorn --factory app.main:create_app --workers N`` on a free port; yields its base URL."""
    port = free_port()
    out = open(log or os.devnull, "ab")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "app.main:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env=settings_env(settings),
        stdout=out,
        stderr=subprocess.STDOUT,
        preexec_fn=die_with_parent,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        out.close()


def wait_healthy(url: str, process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the API exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the API at {url} did not become healthy in {timeout_s:g} s")


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]
