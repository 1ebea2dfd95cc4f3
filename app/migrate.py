"""Alembic from code: upgrade a database to the newest revision, or refuse one that is behind.

The migration scripts live in the ``migrations`` package; `alembic.ini` at the repository root
points at the same folder for people who prefer the ``alembic`` command.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

import migrations

SCRIPT_LOCATION = Path(next(iter(migrations.__path__)))


class SchemaError(RuntimeError):
    """The database is not at the newest migration; the message says what to run."""


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None, "migrations/versions holds no revision"
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> str:
    """Bring the database to the newest revision (a no-op when it is there); returns that revision."""
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
    return head_revision()


def require_current(engine: Engine) -> None:
    """Refuse to serve a database that is unmigrated or behind: writes would hit missing columns."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        url = engine.url.render_as_string(hide_password=True)
        raise SchemaError(
            f"database {url} is at migration {current or 'none'}, the code needs {head}: "
            f"run `autoslim migrate` (or `autoslim up`, which migrates)"
        )
