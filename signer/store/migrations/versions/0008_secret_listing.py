"""Indexes for listing secrets by what a caller may see, and for "who can use it".

Revision ID: 0008_secret_listing
Revises: 0007_secret_backends
Create Date: 2026-12-07

``ix_secrets_folder_id`` lets a listing read only the folders a caller's grants name (a prefix range per
granted folder, ordered by id for the cursor): on PostgreSQL with ``text_pattern_ops`` so that
``LIKE 'prefix/%'`` is an index range whatever the database's collation. ``ix_grants_resource`` finds
the grants about one secret or one folder without reading every principal's grants.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008_secret_listing"
down_revision: str | None = "0007_secret_backends"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_secrets_folder_id", "secrets", ["folder", "id"], postgresql_ops={"folder": "text_pattern_ops"}
    )
    op.create_index("ix_grants_resource", "grants", ["resource_type", "resource_id"])


def downgrade() -> None:
    op.drop_index("ix_grants_resource", table_name="grants")
    op.drop_index("ix_secrets_folder_id", table_name="secrets")
