"""The Alembic migrations build exactly the ORM's schema, and nothing runs on an unmigrated database."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from store.db import engine_for
from app.main import create_app
from app.migrate import SchemaError, alembic_config, current_revision, head_revision, upgrade
from store.tables import Base
from app.testing import fresh_backend


def diff(engine) -> list:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        return compare_metadata(context, Base.metadata)


def test_orm_and_migrations_agree(settings):
    """The session database was built by the migrations alone; autogenerate finds nothing to add."""
    assert diff(engine_for(settings.db_url)) == []


def test_migrations_go_down_and_up_again(tmp_path):
    with fresh_backend(tmp_path) as settings:
        engine = engine_for(settings.db_url)
        upgrade(engine)
        config = alembic_config(settings.db_url)
        command.downgrade(config, "base")
        assert current_revision(engine) is None
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        assert diff(engine) == []


def test_the_app_refuses_an_unmigrated_database(tmp_path):
    with fresh_backend(tmp_path) as settings:
        with pytest.raises(SchemaError, match="autoslim migrate"):
            create_app(settings)
