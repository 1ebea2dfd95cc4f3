"""Trained weights uploaded by users (POST /weights), one row per owner and sha256.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "weights",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("owner", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("tensors", sa.Integer(), nullable=False),
        sa.Column("parameters", sa.BigInteger(), nullable=False),
        sa.Column("shapes", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_weights")),
        sa.UniqueConstraint("owner", "sha256", name=op.f("uq_weights_owner_sha256")),
    )
    with op.batch_alter_table("weights", schema=None) as batch_op:
        batch_op.create_index("ix_weights_owner_created_at", ["owner", "created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("weights", schema=None) as batch_op:
        batch_op.drop_index("ix_weights_owner_created_at")

    op.drop_table("weights")
