"""One name per concept in stored data: a trajectory step's ``accuracy`` column is ``val_accuracy``
(as in the engine and the budget rows), and the TorchScript export format is ``torchscript`` (it
was ``ts``, the file extension) in stored specs and in the budget rows' ``files``.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_searches = sa.table("searches", sa.column("id", sa.String), sa.column("spec", sa.JSON))
_budgets = sa.table("budget_results", sa.column("id", sa.Integer), sa.column("files", sa.JSON))


def upgrade() -> None:
    with op.batch_alter_table("trajectory_steps", schema=None) as batch_op:
        batch_op.alter_column("accuracy", new_column_name="val_accuracy")
    _rename_format("ts", "torchscript")


def downgrade() -> None:
    _rename_format("torchscript", "ts")
    with op.batch_alter_table("trajectory_steps", schema=None) as batch_op:
        batch_op.alter_column("val_accuracy", new_column_name="accuracy")


def _rename_format(old: str, new: str) -> None:
    """The format's name in every spec's ``export_formats`` and every budget row's ``files``."""
    bind = op.get_bind()
    for row in bind.execute(sa.select(_searches.c.id, _searches.c.spec)).all():
        formats = (row.spec or {}).get("export_formats") or []
        if old in formats:
            spec = {**row.spec, "export_formats": [new if f == old else f for f in formats]}
            bind.execute(_searches.update().where(_searches.c.id == row.id).values(spec=spec))
    for row in bind.execute(sa.select(_budgets.c.id, _budgets.c.files)).all():
        if old in (row.files or {}):
            files = {new if k == old else k: v for k, v in row.files.items()}
            bind.execute(_budgets.update().where(_budgets.c.id == row.id).values(files=files))
