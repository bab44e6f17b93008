"""Audit retention and sinks: the archives made before a prune, and each external sink's cursor and lease.

Revision ID: 0012_audit_sinks
Revises: 0011_kek_rotation
Create Date: 2026-12-07

Self-contained (plain column types), like every migration. ``audit_archives``: one row per archive an
admin made (the SHA-256 of its bytes and the range it holds); a prune must name one. ``audit_sinks``: per
external sink, the last seq delivered and the lease that lets one process deliver at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0012_audit_sinks"
down_revision: str | None = "0011_kek_rotation"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _at(name: str, nullable: bool) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "audit_archives",
        sa.Column("digest", sa.Text(), nullable=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=False),
        sa.Column("through_seq", sa.BigInteger(), nullable=False),
        _at("created_at", False),
        sa.Column("created_by", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("digest", name="pk_audit_archives"),
    )
    op.create_table(
        "audit_sinks",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("delivered_seq", sa.BigInteger(), nullable=False),
        sa.Column("lease_owner", sa.Text(), nullable=True),
        _at("lease_until", True),
        _at("failing_since", True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_audit_sinks"),
    )


def downgrade() -> None:
    op.drop_table("audit_sinks")
    op.drop_table("audit_archives")
