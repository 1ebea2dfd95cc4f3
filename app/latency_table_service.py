"""What the API does with latency tables: upload (checked), list, look up, delete, and the check of
a search that names one.

A table is uploaded as the JSON file `autoslim profile` wrote on the device.  It is checked twice:
on upload against the network its key describes (`engine.latency_check`: complete JSON, the fields
of the format, one cost per node of that network's graph), and when a search names it against the
network the search runs and the bins it uses, with its latency budgets inside the range the table
predicts.  Every failure is a `FieldError` (422) whose location is the part of the file or request
at fault.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth import User
from app.listing import get_owned, newest_first, owned
from app.search_service import Conflict
from app.spec_validation import FieldError
from engine.budgets import Budget, BudgetError, check_budgets, resolve_target
from engine.latency import LatencyTable
from engine.latency_check import TableError, check_graph, check_search, read_table, table_network
from engine.spec import SearchSpec
from models.supernet import NetSpec
from store.tables import LatencyTableRow, Search, Status

MAX_TABLE_BYTES = 32 * 1024 * 1024
"""A profiled ResNet-50 at 224 px with 10 bins is about 1 MB; anything 30 times larger is not a table."""


def upload(session: Session, user: User, raw: bytes, name: str | None) -> LatencyTableRow:
    """Check ``raw`` (a table file) against the network it describes and store it for ``user``."""
    try:
        table = read_table(raw)
        supernet = table_network(table)
        check_graph(table, supernet)
    except TableError as err:
        raise FieldError(("body", *err.loc), err.message) from None
    space, net = supernet.space, supernet.spec
    row = LatencyTableRow(
        id=uuid.uuid4().hex,
        owner=user.name,
        name=name,
        arch=net.arch,
        input_size=net.input_size,
        width_mult=net.width_mult,
        num_classes=net.num_classes,
        bins=table.key["bins"],
        nodes=len(table.nodes),
        min_ms=table.predict(space.smallest()),
        max_ms=table.predict(space.full()),
        size_bytes=len(raw),
        data=table.to_dict(),
        **table.describe(),
    )
    session.add(row)
    session.commit()
    return row


def get_visible(session: Session, user: User, table_id: str) -> LatencyTableRow:
    """The table if it exists and ``user`` owns it (admins see all); else `NotFound`."""
    return get_owned(session, LatencyTableRow, table_id, user, "latency table")


def list_visible(
    session: Session, user: User, owner: str | None, limit: int, offset: int
) -> tuple[list[LatencyTableRow], int]:
    """Newest first; users see theirs, admins all (or one owner's)."""
    return newest_first(session, LatencyTableRow, user, owner, limit, offset)


def delete(session: Session, row: LatencyTableRow) -> None:
    """Remove a table no queued or running search still needs (`Conflict` names one that does)."""
    active = session.scalars(select(Search).where(Search.status.in_((Status.queued, Status.running))))
    users = [s.id for s in active if (s.spec or {}).get("latency_table") == row.id]
    if users:
        raise Conflict(
            f"latency table {row.id} is used by {len(users)} queued or running search(es), "
            f"e.g. {users[0]}; cancel them or wait",
            "in-use",
        )
    session.delete(row)
    session.commit()


def check_for_search(session: Session, user: User, spec: SearchSpec, num_classes: int) -> None:
    """The table ``spec`` names exists for ``user``, describes the search's network and bins, and
    its latency range holds every latency budget; else `FieldError` on the field at fault."""
    where = ("body", "latency_table")
    row = owned(session, LatencyTableRow, spec.latency_table, user)
    if row is None:
        raise FieldError(where, f"no latency table {spec.latency_table} (upload one: POST /latency-tables)")
    if spec.train.mode == "mutual":
        raise FieldError(where, "a latency table describes one input size; a MutualNet search spans several")
    table = LatencyTable.from_dict(row.data)
    net = NetSpec.from_dict(spec.network(num_classes))
    try:
        check_search(table, net, spec.search.bins)
    except TableError as err:
        raise FieldError(where, f"table {row.id} does not fit this search: {err.message}") from None
    ranges = {"latency_ms": {"min": row.min_ms, "max": row.max_ms}}
    for index, target in enumerate(spec.latency_ms):
        try:
            check_budgets([Budget("latency_ms", resolve_target(target, row.max_ms, "latency_ms"))], ranges)
        except BudgetError as err:
            raise FieldError(("body", "latency_ms", index), f"{err} on {row.device}, {row.runtime}") from None
