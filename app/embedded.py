"""`autoslim up`: the whole service on one machine, with no Postgres and no Redis.

The API runs in this process (uvicorn) and a real Celery worker in a child process, both on the
SQLite file and the filesystem message queue under ``AUTOSLIM_HOME``.  The admin token is kept in
``AUTOSLIM_HOME/admin.token`` (mode 0600), so every start prints the same one.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

from sqlalchemy import Engine, select

from app.auth import User, create_token, hash_token
from app.schemas import SearchCreate
from store.db import session_scope
from store.settings import Settings
from store.tables import Role, Token

PR_SET_PDEATHSIG = 1
DEMO_SEARCH = {
    "arch": "resnet18",
    "dataset": "digits",
    "input_size": 16,
    "width_mult": 0.25,
    "macs": ["6M", "5M"],
    "train": {"epochs": 3, "batch_size": 64, "num_sandwich": 3, "warmup_epochs": 0.5},
    "search": {"bins": 6, "score_size": 200, "calib_size": 200, "calib_batch_size": 100},
    "export_formats": ["pt", "onnx"],
}
"""ResNet-18 at 0.25 width on the digits at 16 px (full network 8.76M MACs): a real AutoSlim run,
about 95% held-out accuracy at both budgets, under a minute on 2 idle cores."""


def admin_token(engine: Engine, home: Path) -> str:
    """The embedded admin token: the one saved under ``home`` if the database still knows it, else a new one."""
    path = home / "admin.token"
    with session_scope(engine) as session:
        if path.is_file():
            secret = path.read_text().strip()
            known = session.scalar(
                select(Token.id).where(
                    Token.token_hash == hash_token(secret), Token.role == Role.admin, Token.revoked_at.is_(None)
                )
            )
            if known is not None:
                return secret
        secret = create_token(session, "admin", admin=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return secret


def die_with_parent() -> None:
    """In a child about to exec: have Linux kill it when its parent dies, so a killed `autoslim up`
    (or test run) leaves no worker behind.  Elsewhere a no-op."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def start_worker(queue: str) -> subprocess.Popen:
    """A worker process with this process's environment (so the same settings)."""
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker", "--queue", queue], env=dict(os.environ), preexec_fn=die_with_parent
    )


def exit_on_sigterm() -> None:
    """uvicorn re-raises the SIGTERM it shut down on; as SystemExit it lets ``finally`` stop the worker."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


def stop_worker(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Cold shutdown (SIGQUIT: stop now, do not finish the search; its checkpoints are on disk and
    the next start resumes it), then kill."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGQUIT)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def submit_demo(engine: Engine, settings: Settings) -> str:
    """Queue the demo search as the admin; returns its id."""
    from app.search_service import submit
    from worker.celery_app import make_celery

    with session_scope(engine) as session:
        admin = session.scalar(select(Token).where(Token.role == Role.admin).order_by(Token.id))
        user = User(name=admin.name, role=admin.role, token_id=admin.id)
        search, _ = submit(session, make_celery(settings), settings, user, SearchCreate.model_validate(DEMO_SEARCH))
        return search.id
