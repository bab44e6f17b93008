"""Audit keys: every key that signs or signed the audit log's checkpoints, for rotation.

Revision ID: 0021_audit_keys
Revises: 0020_anomaly_baselines
Create Date: 2026-12-07

Self-contained (plain column types), like every migration. The table starts empty: at start the
checkpoint service records the token's audit key as the first one (the key every existing checkpoint
was signed with).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021_audit_keys"
down_revision: str | None = "0020_anomaly_baselines"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_keys",
        sa.Column("key_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("hsm_id", sa.Text(), nullable=False),
        sa.Column("rotation_seq", sa.BigInteger(), nullable=True),
        sa.Column("first_size", sa.BigInteger(), nullable=True),
        sa.Column("retired_size", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("destroyed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key_id", name="pk_audit_keys"),
        sa.UniqueConstraint("rotation_seq", name="uq_audit_keys_rotation_seq"),
    )


def downgrade() -> None:
    op.drop_table("audit_keys")
