"""The dashboard's reads: the filtered, sorted list of searches and the rows of one search page.

Kept apart from the routes so the sorting and the "best accuracy per budget" logic can be read
(and tested) without HTTP.  Admins see every search, so nothing here filters by owner unless asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session, selectinload

from engine.budgets import Budget, describe_target
from engine.spec import BUDGET_KINDS
from store.tables import FINISHED, RETRYABLE, BudgetResult, Search, Status, utcnow

SortKey = Literal["created", "arch", "dataset", "owner", "status", "duration"]
SORT_KEYS: tuple[str, ...] = ("created", "arch", "dataset", "owner", "status", "duration")
ACTIVE = (Status.queued, Status.running)


@dataclass(frozen=True)
class ListQuery:
    """The list page's query string: filters, sort column and direction, page."""

    status: Status | None = None
    owner: str | None = None
    arch: str | None = None
    dataset: str | None = None  # a substring
    sort: SortKey = "created"
    descending: bool = True
    limit: int = 50
    offset: int = 0


def duration_seconds(dialect: str) -> ColumnElement[Any]:
    """started -> finished (or now, while running) in seconds, in the database's own date arithmetic."""
    end = func.coalesce(Search.finished_at, utcnow())
    if dialect == "sqlite":
        return (func.julianday(end) - func.julianday(Search.started_at)) * 86400.0
    return func.extract("epoch", end - Search.started_at)


def _sort_column(key: str, dialect: str) -> ColumnElement[Any]:
    columns = {
        "created": Search.created_at,
        "arch": Search.arch,
        "dataset": Search.dataset,
        "owner": Search.owner,
        "status": Search.status,
    }
    return duration_seconds(dialect) if key == "duration" else columns[key]


def _filtered(query: ListQuery) -> Select[tuple[Search]]:
    statement = select(Search)
    if query.status:
        statement = statement.where(Search.status == query.status)
    if query.owner:
        statement = statement.where(Search.owner == query.owner)
    if query.arch:
        statement = statement.where(Search.arch == query.arch)
    if query.dataset:
        statement = statement.where(Search.dataset.contains(query.dataset, autoescape=True))
    return statement


def list_searches(session: Session, query: ListQuery) -> tuple[list[Search], int]:
    """One page of searches (budgets loaded), and how many match in all.  Searches that never
    started sort after every timed one by duration, in either direction."""
    statement = _filtered(query)
    total = session.scalar(select(func.count()).select_from(statement.subquery())) or 0
    column = _sort_column(query.sort, session.get_bind().dialect.name)
    order = column.desc() if query.descending else column.asc()
    rows = session.scalars(
        statement.options(selectinload(Search.budgets))
        .order_by(order.nulls_last(), Search.created_at.desc(), Search.id)
        .limit(query.limit)
        .offset(query.offset)
    )
    return list(rows), total


def filter_choices(session: Session) -> dict[str, list[str]]:
    """The owners and architectures that occur, for the filter drop-downs."""
    return {
        "owner": list(session.scalars(select(Search.owner).distinct().order_by(Search.owner))),
        "arch": list(session.scalars(select(Search.arch).distinct().order_by(Search.arch))),
    }


def budget_label(result: BudgetResult) -> str:
    return Budget(result.kind, result.target).describe()


def best_accuracy(result: BudgetResult) -> float | None:
    """The figure to judge a budget's answer by: test accuracy after retraining, else validation."""
    return result.test_accuracy if result.test_accuracy is not None else result.val_accuracy


def requested_labels(search: Search) -> list[str]:
    """The budgets the search was asked for (known before any result exists)."""
    return [describe_target(kind, target) for kind in BUDGET_KINDS for target in search.spec.get(kind) or []]


def duration(search: Search, now: datetime | None = None) -> float | None:
    """Seconds from start to finish (to now while it runs); None before it starts."""
    if search.started_at is None:
        return None
    end = search.finished_at or now or utcnow()
    return max(0.0, (end - search.started_at).total_seconds())


def can_cancel(search: Search) -> bool:
    return search.status in ACTIVE and not search.cancel_requested


def can_retry(search: Search) -> bool:
    return search.status in RETRYABLE


def is_finished(search: Search) -> bool:
    return search.status in FINISHED
