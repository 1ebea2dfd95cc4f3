"""The Alembic migrations build exactly the ORM's schema, and nothing runs on an unmigrated database."""

from __future__ import annotations

import json

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from app.main import create_app
from app.migrate import SchemaError, alembic_config, current_revision, head_revision, upgrade
from app.testing import fresh_backend
from store.db import engine_for
from store.tables import Base


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


def test_revision_0006_renames_the_accuracy_column_and_the_torchscript_format_in_stored_rows(tmp_path):
    """A search stored before 0006 (``ts`` in its spec and files, ``accuracy`` on its steps) reads
    with today's names after the upgrade, and back again after a downgrade."""
    with fresh_backend(tmp_path) as settings:
        engine = engine_for(settings.db_url)
        config = alembic_config(settings.db_url)
        command.upgrade(config, "0005")
        now = "2026-12-01 12:00:00+00:00"
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO searches (id, owner, arch, dataset, spec, queue, status, percent, attempts, max_attempts,"
                    " cancel_requested, created_at, updated_at) VALUES ('s1', 'alice', 'resnet18', 'digits', :spec, 'cpu',"
                    " 'succeeded', 100.0, 1, 3, false, :now, :now)"
                ),
                {"spec": json.dumps({"arch": "resnet18", "export_formats": ["pt", "ts"]}), "now": now},
            )
            conn.execute(
                text(
                    "INSERT INTO budget_results (search_id, kind, target, macs, params, channels, config, files) VALUES"
                    " ('s1', 'macs', 5e6, 4900000, 100000, '{}', '{}', :files)"
                ),
                {"files": json.dumps({"config": "budgets/macs-5M/config.json", "ts": "budgets/macs-5M/model.ts"})},
            )
            conn.execute(
                text("INSERT INTO trajectory_steps (search_id, step, accuracy, data) VALUES ('s1', 0, 91.5, '{}')")
            )
        command.upgrade(config, "head")
        with engine.connect() as conn:
            spec = conn.execute(text("SELECT spec FROM searches")).scalar_one()
            files = conn.execute(text("SELECT files FROM budget_results")).scalar_one()
            accuracy = conn.execute(text("SELECT val_accuracy FROM trajectory_steps")).scalar_one()
        spec, files = (json.loads(v) if isinstance(v, str) else v for v in (spec, files))
        assert spec["export_formats"] == ["pt", "torchscript"] and accuracy == 91.5
        assert files == {"config": "budgets/macs-5M/config.json", "torchscript": "budgets/macs-5M/model.ts"}
        command.downgrade(config, "0005")
        with engine.connect() as conn:
            assert json.loads(conn.execute(text("SELECT CAST(spec AS TEXT) FROM searches")).scalar_one())[
                "export_formats"
            ] == ["pt", "ts"]
            assert conn.execute(text("SELECT accuracy FROM trajectory_steps")).scalar_one() == 91.5
