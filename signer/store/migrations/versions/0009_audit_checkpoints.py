"""Audit checkpoints: signed tree heads of the audit log and the Merkle tree's perfect nodes.

Revision ID: 0009_audit_checkpoints
Revises: 0008_secret_listing
Create Date: 2026-12-07

Self-contained (plain column types), like every migration. The tables start empty: the checkpoint
service builds the tree over the existing events on its first run.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_audit_checkpoints"
down_revision: str | None = "0008_secret_listing"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_checkpoints",
        sa.Column("size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("root", sa.Text(), nullable=False),
        sa.Column("head_hash", sa.Text(), nullable=False),
        sa.Column("edge", sa.Text(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("size", name="pk_audit_checkpoints"),
    )
    op.create_table(
        "audit_tree_nodes",
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx", name="pk_audit_tree_nodes"),
    )


def downgrade() -> None:
    op.drop_table("audit_tree_nodes")
    op.drop_table("audit_checkpoints")
