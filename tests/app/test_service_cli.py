"""`autoslim token create`, `autoslim worker` on an unmigrated database, and `autoslim up --demo`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from app.testing import fresh_backend, settings_env, wait_for
from store.db import engine_for


def autoslim(settings, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_token_create_prints_a_working_token_last(settings, app):
    from fastapi.testclient import TestClient

    user = autoslim(settings, "token", "create", "--name", "eve")
    admin = autoslim(settings, "token", "create", "--name", "ops", "--admin")
    assert user.returncode == admin.returncode == 0, user.stderr + admin.stderr
    user_token, admin_token = user.stdout.strip().splitlines()[-1], admin.stdout.strip().splitlines()[-1]
    assert TestClient(app, headers={"Authorization": f"Bearer {user_token}"}).get("/searches").status_code == 200
    assert (
        TestClient(app, headers={"Authorization": f"Bearer {user_token}"})
        .post("/tokens", json={"name": "x"})
        .status_code
        == 403
    )
    assert (
        TestClient(app, headers={"Authorization": f"Bearer {admin_token}"})
        .post("/tokens", json={"name": "x"})
        .status_code
        == 201
    )


def test_worker_and_token_refuse_an_unmigrated_database(tmp_path):
    with fresh_backend(tmp_path) as settings:
        for args in (("worker",), ("token", "create", "--name", "x")):
            done = autoslim(settings, *args)
            assert done.returncode == 2
            assert "run `autoslim migrate`" in done.stderr and "Traceback" not in done.stderr
        engine_for(settings.db_url).dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def up(tmp_path):
    """`autoslim up --demo` on a fresh backend; yields (base URL, admin token, process)."""
    with fresh_backend(tmp_path) as settings:
        port = free_port()
        log = tmp_path / "up.log"
        with open(log, "w") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "up", "--demo", "--port", str(port)],
                env=settings_env(settings),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            line = wait_for(
                lambda: next((row for row in log.read_text().splitlines() if row.startswith("admin token: ")), None),
                60,
                "the admin token line",
                on_timeout=log.read_text,
            )
            yield f"http://127.0.0.1:{port}", line.split()[-1], process, log
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            engine_for(settings.db_url).dispose()


def test_up_serves_the_api_runs_a_real_worker_and_submits_the_demo(up):
    base, token, process, log = up
    client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"})
    wait_for(lambda: _get(client, "/health") == 200, 60, "the API to answer", on_timeout=log.read_text)
    assert "autoslim is up at " + base in log.read_text()
    demo = client.get("/searches").json()["items"]
    assert len(demo) == 1 and demo[0]["dataset"] == "digits"
    search = demo[0]["links"]["self"]
    wait_for(
        lambda: client.get(search).json()["attempts"] == 1,
        120,
        "the worker to claim the demo",
        on_timeout=log.read_text,
    )
    claimed = next(e for e in client.get(f"{search}/events").json() if e["kind"] == "claimed")
    worker_pid = int(claimed["data"]["worker"].rsplit(":", 1)[1])
    process.terminate()
    assert process.wait(30) == 0
    wait_for(lambda: not _alive(worker_pid), 30, "the worker to stop with `autoslim up`")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z" if Path("/proc").is_dir() else True


def _get(client: httpx.Client, path: str) -> int:
    try:
        return client.get(path).status_code
    except httpx.HTTPError:
        return 0
