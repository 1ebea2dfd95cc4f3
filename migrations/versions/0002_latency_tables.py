"""Latency tables uploaded by users (`autoslim profile` on their device).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "latency_tables",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("owner", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("arch", sa.String(length=200), nullable=False),
        sa.Column("input_size", sa.Integer(), nullable=False),
        sa.Column("width_mult", sa.Double(), nullable=False),
        sa.Column("num_classes", sa.Integer(), nullable=False),
        sa.Column("device", sa.String(length=500), nullable=False),
        sa.Column("runtime", sa.String(length=500), nullable=False),
        sa.Column("bins", sa.Integer(), nullable=False),
        sa.Column("nodes", sa.Integer(), nullable=False),
        sa.Column("min_ms", sa.Double(), nullable=False),
        sa.Column("max_ms", sa.Double(), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_latency_tables")),
    )
    with op.batch_alter_table("latency_tables", schema=None) as batch_op:
        batch_op.create_index("ix_latency_tables_owner_created_at", ["owner", "created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("latency_tables", schema=None) as batch_op:
        batch_op.drop_index("ix_latency_tables_owner_created_at")

    op.drop_table("latency_tables")
