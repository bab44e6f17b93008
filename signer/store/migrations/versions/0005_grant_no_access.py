"""Explicit no-access grants: a ``no_access`` flag on ``grants``.

Revision ID: 0005_grant_no_access
Revises: 0004_console_sessions
Create Date: 2026-12-07

Self-contained (plain column types), like every migration. Every grant from before this revision is an
allow grant (``no_access`` false); a no-access grant lists no operations and carries no limits.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_grant_no_access"
down_revision: str | None = "0004_console_sessions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("grants") as batch:
        batch.add_column(sa.Column("no_access", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    # Without the column a no-access grant would read as an allow of nothing: its exception silently
    # gone, and the resource again seen to exist. Refuse while one is live; revoke them first.
    live = (
        op.get_bind()
        .execute(sa.text("SELECT COUNT(*) FROM grants WHERE no_access AND revoked_at IS NULL"))
        .scalar_one()
    )
    if live:
        raise RuntimeError(f"{live} live no-access grant(s): revoke them before downgrading below 0005")
    with op.batch_alter_table("grants") as batch:
        batch.drop_column("no_access")
