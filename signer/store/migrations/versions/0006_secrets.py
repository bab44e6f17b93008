"""Secrets: records (metadata, never a value) and their sealed versions.

Revision ID: 0006_secrets
Revises: 0005_grant_no_access
Create Date: 2026-12-07

Self-contained (plain column types), like every migration.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0006_secrets"
down_revision: str | None = "0005_grant_no_access"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, nullable: bool) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "secrets",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("folder", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("tags", sa.Text(), nullable=False),
        sa.Column("category", sa.Text(), nullable=False),
        sa.Column("owner_type", sa.Text(), nullable=False),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("consumers", sa.Text(), nullable=False),
        sa.Column("origin", sa.Text(), nullable=False),
        sa.Column("generation", sa.Text(), nullable=True),
        sa.Column("current_version", sa.Integer(), nullable=False),
        _ts("created_at", False),
        sa.Column("created_by", sa.Text(), nullable=True),
        _ts("updated_at", False),
        sa.Column("updated_by", sa.Text(), nullable=True),
        _ts("last_fetched_at", True),
        sa.Column("last_fetched_by", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_secrets"),
    )
    op.create_index("ix_secrets_folder_name", "secrets", ["folder", "name"], unique=True)
    op.create_table(
        "secret_versions",
        sa.Column("secret_id", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("kek_id", sa.Text(), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("sealed_fields", sa.Text(), nullable=False),
        _ts("created_at", False),
        sa.Column("created_by", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("secret_id", "version", name="pk_secret_versions"),
        sa.ForeignKeyConstraint(["secret_id"], ["secrets.id"], name="fk_secret_versions_secret_id_secrets"),
    )


def downgrade() -> None:
    op.drop_table("secret_versions")
    op.drop_index("ix_secrets_folder_name", table_name="secrets")
    op.drop_table("secrets")
