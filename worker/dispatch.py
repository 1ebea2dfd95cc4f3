"""Every stored search reaches a worker: its message is sent at submission, or later.

A search row is committed before its message is sent (a message must never name a row that does
not exist yet), so a broker outage, or an API process dying between the two, leaves a ``queued``
row that no message carries.  ``enqueued_at`` tells them apart: it is set once the broker took the
message.  Each worker's reaper thread calls `send_unsent` on every pass, so such searches are sent
as soon as the broker answers again; a duplicate message (the API and a sweep racing) is harmless,
because only one claim of a queued search succeeds.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import Celery
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from store.db import session_scope
from store.tables import Event, Search, Status, utcnow
from worker.celery_app import BrokerUnavailable, enqueue

log = logging.getLogger(__name__)
UNSENT_GRACE_S = 2.0
"""A queued row younger than this may still be in the middle of its own send; the sweep leaves it."""


def send(session: Session, celery: Celery, search_id: str, queue: str) -> None:
    """Send the search's message and mark it sent (committed); `BrokerUnavailable` leaves it unsent."""
    enqueue(celery, search_id, queue)
    session.execute(
        update(Search)
        .where(Search.id == search_id, Search.status == Status.queued)
        .values(enqueued_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.commit()


def send_unsent(engine: Engine, celery: Celery, grace_s: float = UNSENT_GRACE_S) -> list[str]:
    """Send every queued search whose message was never sent; returns their ids.  Stops at the
    first broker failure (the next pass tries again)."""
    cutoff = utcnow() - timedelta(seconds=grace_s)
    with session_scope(engine) as session:
        unsent = session.execute(
            select(Search.id, Search.queue)
            .where(Search.status == Status.queued, Search.enqueued_at.is_(None), Search.updated_at < cutoff)
            .order_by(Search.created_at)
        ).all()
    sent: list[str] = []
    for row in unsent:
        with session_scope(engine) as session:
            try:
                send(session, celery, row.id, row.queue)
            except BrokerUnavailable as err:
                log.warning("broker still unavailable; %d searches wait to be sent: %s", len(unsent) - len(sent), err)
                break
            session.add(Event(search_id=row.id, kind="sent", message="sent to the broker after it was unavailable"))
        sent.append(row.id)
    return sent
