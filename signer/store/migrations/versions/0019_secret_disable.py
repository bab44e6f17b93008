"""A whole secret's state: active or disabled, apart from its versions' states.

Revision ID: 0019_secret_disable
Revises: 0018_key_states
Create Date: 2026-12-07

Self-contained (plain column types), like every migration. Existing secrets start ``active`` (read as
before); a disabled secret answers no read of any version until it is enabled again.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019_secret_disable"
down_revision: str | None = "0018_key_states"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("secrets") as batch:
        batch.add_column(sa.Column("state", sa.Text(), nullable=False, server_default="active"))
        batch.add_column(sa.Column("state_changed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("state_changed_by", sa.Text(), nullable=True))
        batch.add_column(sa.Column("state_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    # Below 0019 every secret reads as active: a disabled one would answer reads again.
    held = op.get_bind().execute(sa.text("SELECT COUNT(*) FROM secrets WHERE state <> 'active'")).scalar_one()
    if held:
        raise RuntimeError(f"{held} secret(s) disabled: enable them before downgrading below 0019")
    with op.batch_alter_table("secrets") as batch:
        for name in ("state_reason", "state_changed_by", "state_changed_at", "state"):
            batch.drop_column(name)
