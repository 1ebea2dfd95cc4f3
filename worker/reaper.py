"""Finds searches whose worker died (heartbeat older than ``stale_after_s``) and requeues or fails them.

A killed worker never acknowledges its message; Redis would redeliver it only after the visibility
timeout (days, since searches are long) and the embedded filesystem queue never does.  So the
database heartbeat is the source of truth: a stale running search goes back to ``queued`` with a
fresh message (the old claim is void, see `worker.claims.Claim`) until ``max_attempts`` claims
have been spent, then it fails with a reason a person can act on.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

from celery import Celery
from sqlalchemy import Engine, select, update

from store.db import engine_for, session_scope
from store.settings import Settings, get_settings
from store.tables import Event, Search, Status, utcnow
from worker.celery_app import BrokerUnavailable
from worker.dispatch import send, send_unsent

log = logging.getLogger(__name__)


def reap(engine: Engine, celery: Celery, stale_after_s: float) -> dict[str, str]:
    """One pass; returns ``{search_id: "requeued" | "failed" | "sent"}`` for what it changed: stale
    running searches requeued or failed, and queued searches whose message never left sent."""
    cutoff = utcnow() - timedelta(seconds=stale_after_s)
    with session_scope(engine) as session:
        stale = session.execute(
            select(Search.id, Search.claim_id, Search.attempts, Search.max_attempts, Search.queue, Search.worker).where(
                Search.status == Status.running, Search.heartbeat_at < cutoff
            )
        ).all()
    changed: dict[str, str] = {}
    for row in stale:
        outcome = _reap_one(engine, row, stale_after_s)
        if outcome:
            changed[row.id] = outcome
            if outcome == "requeued":
                _send_requeued(engine, celery, row.id, row.queue)
    changed.update({search_id: "sent" for search_id in send_unsent(engine, celery)})
    return changed


def _send_requeued(engine: Engine, celery: Celery, search_id: str, queue: str) -> None:
    with session_scope(engine) as session:
        try:
            send(session, celery, search_id, queue)
        except BrokerUnavailable:
            log.warning("search %s requeued but the broker is unavailable; sent on a later pass", search_id)


def _reap_one(engine: Engine, row, stale_after_s: float) -> str | None:  # noqa: ANN001 - a result Row
    requeue = row.attempts < row.max_attempts
    values = (
        {"status": Status.queued, "claim_id": None, "worker": None, "enqueued_at": None}
        if requeue
        else {
            "status": Status.failed,
            "claim_id": None,
            "finished_at": utcnow(),
            "error": f"worker lost {row.attempts} times (no heartbeat for {stale_after_s:g} s); "
            "retry to continue from the checkpoints",
        }
    )
    with session_scope(engine) as session:
        result = session.execute(
            update(Search)
            .where(Search.id == row.id, Search.status == Status.running, Search.claim_id == row.claim_id)
            .values(updated_at=utcnow(), **values)
        )
        if result.rowcount != 1:
            return None  # it came back to life, or another reaper got there first
        outcome = "requeued" if requeue else "failed"
        session.add(
            Event(
                search_id=row.id,
                kind=outcome,
                level="warning",
                message=f"no heartbeat from {row.worker} for {stale_after_s:g} s after attempt "
                f"{row.attempts}; {outcome}",
                data={"attempt": row.attempts, "worker": row.worker},
            )
        )
    log.warning("search %s: stale heartbeat from %s; %s", row.id, row.worker, outcome)
    return outcome


def start_reaper(celery: Celery) -> threading.Thread:
    """A daemon thread running `reap` every ``reaper_every_s`` for the life of the worker."""
    settings: Settings = getattr(celery, "autoslim_settings", None) or get_settings()
    engine = engine_for(settings.db_url)

    def loop() -> None:
        while True:
            try:
                reap(engine, celery, settings.stale_after_s)
            except Exception:  # noqa: BLE001 - a failed pass is retried on the next tick
                log.warning("reaper pass failed", exc_info=True)
            time.sleep(settings.reaper_every_s)

    thread = threading.Thread(target=loop, name="autoslim-reaper", daemon=True)
    thread.start()
    return thread
