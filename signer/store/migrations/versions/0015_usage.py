"""Usage: per-day fetch counts per secret, principal and workload; grant use; references resolved.

Revision ID: 0015_usage
Revises: 0014_kms_credentials
Create Date: 2026-12-07

Self-contained (plain column types), like every migration. The tables start empty: usage is counted
from this version on (the audit log holds every earlier fetch).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015_usage"
down_revision: str | None = "0014_kms_credentials"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "secret_usage",
        sa.Column("secret_id", sa.Text(), nullable=False),
        sa.Column("day", sa.Integer(), nullable=False),
        sa.Column("principal_id", sa.Text(), nullable=False),
        sa.Column("workload", sa.Text(), nullable=False),
        sa.Column("fetches", sa.BigInteger(), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_version", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("secret_id", "day", "principal_id", "workload", name="pk_secret_usage"),
    )
    op.create_index("ix_secret_usage_day", "secret_usage", ["day"])
    op.create_table(
        "grant_usage",
        sa.Column("grant_id", sa.Text(), nullable=False),
        sa.Column("principal_id", sa.Text(), nullable=False),
        sa.Column("resource_type", sa.Text(), nullable=False),
        sa.Column("resource_id", sa.Text(), nullable=False),
        sa.Column("uses", sa.BigInteger(), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("min_version", sa.Integer(), nullable=True),
        sa.Column("max_version", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("grant_id", "principal_id", "resource_id", name="pk_grant_usage"),
    )
    op.create_index("ix_grant_usage_principal_id", "grant_usage", ["principal_id"])
    op.create_index("ix_grant_usage_resource_id", "grant_usage", ["resource_id"])
    # Secrets never fetched, or not fetched in N days, without reading every secret.
    op.create_index("ix_secrets_last_fetched_at", "secrets", ["last_fetched_at"])
    op.create_table(
        "secret_reference_usage",
        sa.Column("secret_id", sa.Text(), nullable=False),
        sa.Column("principal_id", sa.Text(), nullable=False),
        sa.Column("reference", sa.Text(), nullable=False),
        sa.Column("workspace", sa.Text(), nullable=False),
        sa.Column("uses", sa.BigInteger(), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "secret_id", "principal_id", "reference", "workspace", name="pk_secret_reference_usage"
        ),
    )


def downgrade() -> None:
    op.drop_table("secret_reference_usage")
    op.drop_index("ix_secrets_last_fetched_at", table_name="secrets")
    op.drop_index("ix_grant_usage_resource_id", table_name="grant_usage")
    op.drop_index("ix_grant_usage_principal_id", table_name="grant_usage")
    op.drop_table("grant_usage")
    op.drop_index("ix_secret_usage_day", table_name="secret_usage")
    op.drop_table("secret_usage")
