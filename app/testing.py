"""Test support: a fresh, migrated backend per test session, and worker processes to run on it.

``AUTOSLIM_TEST_BACKEND`` picks the backend: ``embedded`` (default: a SQLite file and the
filesystem queue in a temporary folder) or ``postgres-redis`` (a uniquely named database created
on the Postgres server and dropped afterwards, and a unique key prefix on Redis, deleted
afterwards), so test sessions never see each other's data.  Lives in the package because both
``tests/app`` and ``tests/worker`` use it and test folders are not importable packages.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.embedded import die_with_parent
from store.settings import Settings

BACKEND_ENV = "AUTOSLIM_TEST_BACKEND"
BACKENDS = ("embedded", "postgres-redis")
POSTGRES_ADMIN_URL = os.environ.get(
    "AUTOSLIM_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("AUTOSLIM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
LATENCY_CACHE = Path(
    os.environ.get("AUTOSLIM_TEST_LATENCY_CACHE", Path(tempfile.gettempdir()) / "autoslim-test-latency")
)
"""Shared by test sessions (both backends of a CI run): a latency table is a measurement of this
machine that the engine takes for every new network shape and caches, as production workers do."""
FAST_LOOP = {"heartbeat_s": 0.5, "progress_every_s": 0.5, "stale_after_s": 8.0, "reaper_every_s": 1.0}
"""Heartbeats and reaping on a test's time scale (production: 5 s, 2 s, 120 s, 30 s)."""


def backend_name() -> str:
    name = os.environ.get(BACKEND_ENV, "embedded")
    if name not in BACKENDS:
        raise ValueError(f"{BACKEND_ENV}={name!r}; choose from {', '.join(BACKENDS)}")
    return name


@contextmanager
def fresh_backend(folder: Path, **overrides: Any) -> Iterator[Settings]:
    """Settings on a new, empty backend of the selected kind; everything is removed afterwards."""
    base = {
        "home": folder,
        "work_dir": folder / "work",
        "supernet_cache": folder / "supernets",
        "latency_cache": LATENCY_CACHE,
        **FAST_LOOP,
    }
    if backend_name() == "embedded":
        yield Settings(**base, **overrides)
        return
    tag = f"autoslim_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{tag}"'))
    url = make_url(POSTGRES_ADMIN_URL).set(database=tag).render_as_string(hide_password=False)
    try:
        yield Settings(**base, database_url=url, broker_url=REDIS_URL, broker_prefix=f"{tag}:", **overrides)
    finally:
        from store.db import engine_for

        engine_for(url).dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{tag}" WITH (FORCE)'))
        admin.dispose()
        _drop_redis_keys(f"{tag}:")


def _drop_redis_keys(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a subprocess (a worker, `autoslim up`) exactly these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOSLIM_") or k == BACKEND_ENV}
    for name, value in settings.model_dump(exclude_none=True).items():
        if name == "data_roots":
            value = os.pathsep.join(str(p) for p in value)
        env[f"AUTOSLIM_{name.upper()}"] = str(value)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class WorkerProcess:
    """``autoslim worker`` as a child process with its output in a log file."""

    def __init__(self, settings: Settings, log: Path, queue: str = "cpu") -> None:
        self.log = log
        self._out = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker", "--queue", queue],
            env=settings_env(settings),
            stdout=self._out,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """kill -9: no warm shutdown, no acknowledgement, no last write."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._out.close()

    def stop(self, grace_s: float = 15.0) -> None:
        """Cold shutdown (SIGQUIT): a test's worker has nothing left worth finishing."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.kill()
                return
        self._out.close()

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def wait_for(
    predicate: Callable[[], Any],
    timeout_s: float,
    what: str,
    poll_s: float = 0.25,
    on_timeout: Callable[[], str] = lambda: "",
) -> Any:
    """Poll until ``predicate()`` is truthy and return its value; AssertionError naming ``what`` after the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}\n{on_timeout()}")
        time.sleep(poll_s)
