"""Console sessions (server-side, stored hashed) and rotatable webhook secrets.

Revision ID: 0004_console_sessions
Revises: 0003
Create Date: 2026-12-07

Self-contained (plain column types), like every migration. A webhook row from before this revision has
no secret salt: its secret stays the one derived from the group name alone until it is rotated.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0004_console_sessions"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, nullable: bool) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("digest", sa.LargeBinary(), nullable=False),
        sa.Column("principal_id", sa.Text(), nullable=False),
        sa.Column("token_id", sa.Text(), nullable=False),
        _ts("created_at", False),
        _ts("last_seen_at", False),
        _ts("expires_at", False),
        sa.PrimaryKeyConstraint("id", name="pk_console_sessions"),
        sa.UniqueConstraint("digest", name="uq_console_sessions_digest"),
        sa.ForeignKeyConstraint(
            ["principal_id"], ["principals.id"], name="fk_console_sessions_principal_id_principals"
        ),
        sa.ForeignKeyConstraint(["token_id"], ["tokens.id"], name="fk_console_sessions_token_id_tokens"),
    )
    op.create_index("ix_console_sessions_expires_at", "console_sessions", ["expires_at"])
    op.create_index("ix_console_sessions_token_id", "console_sessions", ["token_id"])
    with op.batch_alter_table("approval_webhooks") as batch:
        batch.add_column(sa.Column("secret_salt", sa.Text(), nullable=True))
        batch.add_column(sa.Column("previous_secret_salt", sa.Text(), nullable=True))
        batch.add_column(_ts("previous_secret_until", True))


def downgrade() -> None:
    with op.batch_alter_table("approval_webhooks") as batch:
        batch.drop_column("previous_secret_until")
        batch.drop_column("previous_secret_salt")
        batch.drop_column("secret_salt")
    op.drop_table("console_sessions")
