"""The database tables (SQLAlchemy 2 typed ORM).  Every change here needs an Alembic migration.

Status, role and budget-kind columns are plain strings checked in code (not database enums), so a
new value never needs a type migration on Postgres or a table rebuild on SQLite.
"""

from __future__ import annotations

from datetime import datetime, timezone
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Index, MetaData, String, Text, UniqueConstraint
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite hands back naive ones otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime stored; use timezone-aware UTC")
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value


class Status(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


FINISHED = (Status.succeeded, Status.failed, Status.cancelled)
RETRYABLE = (Status.failed, Status.cancelled)


class Role(StrEnum):
    user = "user"
    admin = "admin"


NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {
        datetime: UTCDateTime,
        dict[str, Any]: JSON(none_as_null=True),
        list[Any]: JSON(none_as_null=True),
    }


class Token(Base):
    """A bearer API token; only the sha256 of the secret is stored.  ``name`` is the owner's name."""

    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), index=True)
    role: Mapped[str] = mapped_column(String(16), default=Role.user)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class AdminSession(Base):
    """A dashboard login: the browser's cookie holds a random secret whose sha256 is the id.  It
    expires, logout revokes it, and it dies with the token it was opened with; the API token itself
    never leaves the login form."""

    __tablename__ = "admin_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_id: Mapped[int] = mapped_column(ForeignKey("tokens.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class Supernet(Base):
    """A trained supernet on disk, keyed by everything that shaped its weights; reused across searches."""

    __tablename__ = "supernets"
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(128), unique=True)
    arch: Mapped[str] = mapped_column(String(64))
    dataset: Mapped[str] = mapped_column(String(500))
    path: Mapped[str] = mapped_column(String(1000))
    first_search_id: Mapped[str | None] = mapped_column(String(32))
    uses: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime] = mapped_column(default=utcnow)


class Search(Base):
    """One submitted search: its spec, where it stands, who runs it, and how it ended."""

    __tablename__ = "searches"
    __table_args__ = (
        UniqueConstraint("owner", "idempotency_key"),
        Index("ix_searches_owner_created_at", "owner", "created_at"),
        Index("ix_searches_status_created_at", "status", "created_at"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(100))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    arch: Mapped[str] = mapped_column(String(64))
    dataset: Mapped[str] = mapped_column(String(500))
    spec: Mapped[dict[str, Any]]
    queue: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=Status.queued)
    phase: Mapped[str | None] = mapped_column(String(16))
    percent: Mapped[float] = mapped_column(default=0.0)
    eta_s: Mapped[float | None]
    progress: Mapped[dict[str, Any] | None]
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int]
    claim_id: Mapped[str | None] = mapped_column(String(32))
    enqueued_at: Mapped[datetime | None]  # when its message was sent; None while queued = not yet sent
    worker: Mapped[str | None] = mapped_column(String(200))
    heartbeat_at: Mapped[datetime | None]
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    error: Mapped[str | None] = mapped_column(Text)
    timings: Mapped[dict[str, Any] | None]
    summary: Mapped[dict[str, Any] | None]
    uniform: Mapped[list[Any] | None]  # the uniform-width baseline: `engine.spec.UniformPoint.to_dict()`s
    supernet_id: Mapped[int | None] = mapped_column(ForeignKey("supernets.id", ondelete="SET NULL"))
    supernet_reused: Mapped[bool | None]
    workdir: Mapped[str | None] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    supernet: Mapped[Supernet | None] = relationship(lazy="joined")
    budgets: Mapped[list[BudgetResult]] = relationship(
        back_populates="search",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="(BudgetResult.kind, BudgetResult.target)",
    )


class TrajectoryStep(Base):
    """One greedy slimming step as the engine reported it; (search, step) is unique so none repeats."""

    __tablename__ = "trajectory_steps"
    __table_args__ = (UniqueConstraint("search_id", "step"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    search_id: Mapped[str] = mapped_column(ForeignKey("searches.id", ondelete="CASCADE"))
    step: Mapped[int]
    macs: Mapped[int | None] = mapped_column(BigInteger)
    params: Mapped[int | None] = mapped_column(BigInteger)
    val_accuracy: Mapped[float | None]
    data: Mapped[dict[str, Any]]


class BudgetResult(Base):
    """The configuration chosen for one budget, with its channel-config JSON so any API host can serve it."""

    __tablename__ = "budget_results"
    __table_args__ = (UniqueConstraint("search_id", "kind", "target"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    search_id: Mapped[str] = mapped_column(ForeignKey("searches.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    target: Mapped[float]
    macs: Mapped[int] = mapped_column(BigInteger)
    params: Mapped[int] = mapped_column(BigInteger)
    latency_ms: Mapped[float | None]
    val_accuracy: Mapped[float | None]
    test_accuracy: Mapped[float | None]
    channels: Mapped[dict[str, Any]]
    config: Mapped[dict[str, Any]]
    files: Mapped[dict[str, Any]]

    search: Mapped[Search] = relationship(back_populates="budgets")


class Event(Base):
    """A line of the log a person reads: submitted, claimed, phase changes, requeued, failed..."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(primary_key=True)
    search_id: Mapped[str | None] = mapped_column(ForeignKey("searches.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    level: Mapped[str] = mapped_column(String(16), default="info")
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None]


class LatencyTableRow(Base):
    """A latency table a user uploaded (`autoslim profile` on their device), checked against the
    network it describes; searches name it so their latency budgets are milliseconds on that device."""

    __tablename__ = "latency_tables"
    __table_args__ = (Index("ix_latency_tables_owner_created_at", "owner", "created_at"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(100))
    name: Mapped[str | None] = mapped_column(String(200))
    arch: Mapped[str] = mapped_column(String(200))
    input_size: Mapped[int]
    width_mult: Mapped[float]
    num_classes: Mapped[int]
    device: Mapped[str] = mapped_column(String(500))
    runtime: Mapped[str] = mapped_column(String(500))
    bins: Mapped[int]
    nodes: Mapped[int]
    min_ms: Mapped[float]
    max_ms: Mapped[float]
    size_bytes: Mapped[int]
    data: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WeightsRow(Base):
    """Trained weights a user uploaded (a state dict), stored once per sha256 and owner; the file is
    ``Settings.weights_root/<sha256>`` and ``shapes`` (key -> shape) lets a search be checked without it."""

    __tablename__ = "weights"
    __table_args__ = (UniqueConstraint("owner", "sha256"), Index("ix_weights_owner_created_at", "owner", "created_at"))
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(100))
    name: Mapped[str | None] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(16))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    tensors: Mapped[int]
    parameters: Mapped[int] = mapped_column(BigInteger)
    shapes: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
