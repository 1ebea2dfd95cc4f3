"""Who sees which rows, and one page of them: the same for searches and uploads (latency tables, weights)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Query
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from app.auth import User

MAX_OFFSET = 10**9
"""The largest page offset taken: beyond any real table, and far inside every database's integer."""

Owner = Annotated[str | None, Query(max_length=100, description="Admins only.")]
Limit = Annotated[int, Query(ge=1, le=100)]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]
"""The query parameters of every listing (searches, latency tables, weights)."""

PageT = TypeVar("PageT")


def visible(query: Select, owner_column: Any, user: User, owner: str | None) -> Select:
    """Users see their own rows; admins everyone's, or one owner's when they name one."""
    if not user.is_admin:
        return query.where(owner_column == user.name)
    return query.where(owner_column == owner) if owner else query


def page(session: Session, query: Select, order: tuple, limit: int, offset: int) -> tuple[list[Any], int]:
    """One page of ``query`` in ``order``, and how many rows match in all."""
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    return list(session.scalars(query.order_by(*order).limit(limit).offset(offset))), total


class NotFound(LookupError):
    """No such row, or not one this user may see (the two are not told apart): a 404."""


def page_out(
    kind: Callable[..., PageT], found: tuple[list[Any], int], out: Callable[[Any], Any], limit: int, offset: int
) -> PageT:
    """The response of a listing: the rows `page` found, each shaped by ``out``, in a ``kind`` page."""
    rows, total = found
    return kind(items=[out(r) for r in rows], total=total, limit=limit, offset=offset)


def owned(session: Session, model: type, row_id: str, user: User) -> Any | None:
    """The row ``row_id`` of ``model`` if it exists and ``user`` owns it (admins see all); else None."""
    row = session.get(model, row_id) if len(row_id) <= 32 else None
    return row if row is not None and (user.is_admin or row.owner == user.name) else None


def get_owned(session: Session, model: type, row_id: str, user: User, what: str) -> Any:
    """`owned`, or `NotFound` (``no <what> <row_id>``) where it gives None."""
    row = owned(session, model, row_id, user)
    if row is None:
        raise NotFound(f"no {what} {row_id}")
    return row


def newest_first(
    session: Session, model: type, user: User, owner: str | None, limit: int, offset: int
) -> tuple[list[Any], int]:
    """One page of the rows of ``model`` (an upload: ``owner``, ``created_at``, ``id``) ``user`` may see."""
    query = visible(select(model), model.owner, user, owner)
    return page(session, query, (model.created_at.desc(), model.id.desc()), limit, offset)
