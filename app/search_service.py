"""What the API does to searches: submit (validate, store, enqueue), look up, cancel, retry.

State changes are conditional UPDATEs on the current status, so the API and a worker acting on
the same search at the same moment (a cancel racing a claim, two retries) never both win.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

from celery import Celery
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.auth import User
from app.listing import NotFound, get_owned, page, visible
from app.schemas import SearchCreate
from app.spec_validation import FieldError, check_dataset, validated_spec
from engine.budgets import BudgetError, parse_amount
from engine.spec import SearchSpec
from store.settings import Settings
from store.tables import RETRYABLE, BudgetResult, Event, Search, Status, TrajectoryStep, utcnow
from worker.celery_app import BrokerUnavailable
from worker.dispatch import send


class QueueUnavailable(RuntimeError):
    """The search is stored (queued) but the broker did not take its message: a 503.  A worker's
    dispatcher sends it once the broker is back; a retry with the same Idempotency-Key sends it too."""

    def __init__(self, search_id: str, reason: str) -> None:
        super().__init__(
            f"search {search_id} is stored but the message broker is unavailable ({reason}); "
            "the workers get it as soon as the broker is back. Follow it at /searches/ID (a POST "
            "repeated with the same Idempotency-Key answers with it); do not submit it anew."
        )
        self.search_id = search_id


class Conflict(RuntimeError):
    """The search is not in a state that allows this; carries the current status for the 409."""

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.status = status


def log_event(
    session: Session,
    search_id: str | None,
    kind: str,
    message: str,
    level: str = "info",
    data: dict[str, Any] | None = None,
) -> None:
    session.add(Event(search_id=search_id, kind=kind, message=message, level=level, data=data))


def submit(
    session: Session,
    celery: Celery,
    settings: Settings,
    user: User,
    body: SearchCreate,
    idempotency_key: str | None = None,
) -> tuple[Search, bool]:
    """Store and enqueue a search; (search, created).  A repeated Idempotency-Key returns the first."""
    checked = validated_spec(body, settings)
    if checked.latency_table or checked.weights:
        _check_uploads(session, user, checked, check_dataset(checked.dataset, settings.resolved_data_roots)[1])
    spec, queue = checked.to_dict(), body.queue or settings.default_queue
    if idempotency_key:
        existing = _by_key(session, user.name, idempotency_key)
        if existing is not None:
            return _resend_if_unsent(session, celery, _same_request(existing, spec, queue)), False
    search = Search(
        id=uuid.uuid4().hex,
        owner=user.name,
        idempotency_key=idempotency_key,
        arch=body.arch,
        dataset=body.dataset,
        spec=spec,
        queue=queue,
        status=Status.queued,
        max_attempts=settings.max_attempts,
    )
    session.add(search)
    session.flush()  # the row first: events reference it, and the unit of work does not order them
    log_event(session, search.id, "submitted", f"submitted by {user.name} to the {queue} queue")
    try:
        session.commit()
    except IntegrityError:  # the same key raced in from a concurrent retry of this POST
        session.rollback()
        existing = _by_key(session, user.name, idempotency_key or "")
        if existing is None:
            raise
        return _same_request(existing, spec, queue), False
    _send_or_503(session, celery, search)
    return search, True


def _send_or_503(session: Session, celery: Celery, search: Search) -> None:
    try:
        send(session, celery, search.id, search.queue)
    except BrokerUnavailable as err:
        session.rollback()
        raise QueueUnavailable(search.id, str(err)) from None
    session.refresh(search)


def _resend_if_unsent(session: Session, celery: Celery, search: Search) -> Search:
    """A replayed submission of a search whose message never left: send it now."""
    if search.status == Status.queued and search.enqueued_at is None:
        _send_or_503(session, celery, search)
    return search


def _check_uploads(session: Session, user: User, spec: SearchSpec, num_classes: int) -> None:
    """The latency table and weights a search names: ``user``'s, and fitting its network."""
    from app import latency_table_service, weights_service  # they raise this module's errors

    if spec.latency_table:
        latency_table_service.check_for_search(session, user, spec, num_classes)
    if spec.weights:
        weights_service.check_for_search(session, user, spec, num_classes)


def _by_key(session: Session, owner: str, key: str) -> Search | None:
    return session.scalar(select(Search).where(Search.owner == owner, Search.idempotency_key == key))


def _same_request(existing: Search, spec: dict[str, Any], queue: str) -> Search:
    if existing.spec != spec or existing.queue != queue:
        raise FieldError(("header", "Idempotency-Key"), "this key was used for a different request")
    return existing


def get_visible(session: Session, user: User, search_id: str) -> Search:
    """The search if it exists and ``user`` owns it (admins see all); else `NotFound`."""
    return get_owned(session, Search, search_id, user, "search")


def list_visible(
    session: Session, user: User, status: Status | None, owner: str | None, limit: int, offset: int
) -> tuple[list[Search], int]:
    """Newest first; users see theirs, admins all (or one owner's)."""
    query = visible(select(Search), Search.owner, user, owner)
    if status:
        query = query.where(Search.status == status)
    return page(session, query, (Search.created_at.desc(), Search.id.desc()), limit, offset)


def cancel(session: Session, search: Search, user: User) -> Search:
    """A queued search ends now; a running one is flagged and its worker stops at the next step,
    keeping its checkpoints and every trajectory step found so far (a retry continues from them)."""
    now = utcnow()
    if _transition(session, search, (Status.queued,), status=Status.cancelled, finished_at=now):
        log_event(session, search.id, "cancelled", f"cancelled by {user.name} before it started")
    elif _transition(session, search, (Status.running,), cancel_requested=True):
        log_event(session, search.id, "cancel-requested", f"cancel requested by {user.name}")
    else:
        raise Conflict(f"search is {search.status}; only queued or running searches can be cancelled", search.status)
    session.commit()
    session.refresh(search)
    return search


def retry(session: Session, celery: Celery, settings: Settings, search: Search, user: User) -> Search:
    """Queue a failed or cancelled search again; the worker resumes from its work directory."""
    if not _transition(
        session,
        search,
        RETRYABLE,
        status=Status.queued,
        cancel_requested=False,
        error=None,
        finished_at=None,
        claim_id=None,
        enqueued_at=None,
        max_attempts=search.attempts + settings.max_attempts,
    ):
        raise Conflict(f"search is {search.status}; only failed or cancelled searches can be retried", search.status)
    log_event(session, search.id, "retried", f"retried by {user.name}; continues from its checkpoints")
    session.commit()
    _send_or_503(session, celery, search)
    return search


def _transition(session: Session, search: Search, from_states: tuple[str, ...], **values: Any) -> bool:
    """UPDATE ... WHERE status IN from_states; True when this call made the change."""
    result = session.execute(
        update(Search)
        .where(Search.id == search.id, Search.status.in_(from_states))
        .values(updated_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 0:
        session.refresh(search)
        return False
    return True


def budget_result(search: Search, asked: dict[str, str | None]) -> BudgetResult:
    """The result of the one budget ``asked`` names (``{"macs": "2M"}``; ``2000000`` works too).

    `Conflict` until the search has succeeded, `FieldError` (422) for no budget, two, or an
    unreadable amount, `NotFound` for a budget the search was not asked for (the message lists them).
    """
    if search.status != Status.succeeded:
        raise Conflict(f"search is {search.status}; results exist once it has succeeded", search.status)
    named = {kind: text for kind, text in asked.items() if text}
    have = ", ".join(f"{r.kind}={r.target:g}" for r in search.budgets) or "none"
    if len(named) != 1:
        message = "ask for one budget at a time" if named else f"name one budget; this search has {have}"
        raise FieldError(("query", *(named or asked)), message)
    ((kind, text),) = named.items()
    try:
        target = parse_amount(text)
    except BudgetError as err:
        raise FieldError(("query", kind), str(err)) from None
    for result in search.budgets:
        if math.isfinite(target) and result.kind == kind and abs(result.target - target) <= 1e-9 * max(1.0, target):
            return result
    raise NotFound(f"this search has no {kind} budget of {target:g} (it has {have})")


def trajectory(session: Session, search_id: str) -> list[TrajectoryStep]:
    return list(
        session.scalars(
            select(TrajectoryStep).where(TrajectoryStep.search_id == search_id).order_by(TrajectoryStep.step)
        )
    )


def events(session: Session, search_id: str, limit: int) -> list[Event]:
    return list(session.scalars(select(Event).where(Event.search_id == search_id).order_by(Event.id).limit(limit)))
