"""The key lifecycle (NIST SP 800-57): a disabled key becomes suspended; a compromise may carry its date.

Revision ID: 0018_key_states
Revises: 0017_console_books
Create Date: 2026-12-07

Self-contained (plain column types), like every migration. Before it a key was ``active`` or
``disabled``; ``disable`` is now ``suspend``, so every ``disabled`` row becomes ``suspended`` (it signs
nothing, and ``activate`` brings it back, as ``enable`` did). Downgrading keeps ``active`` keys active and
makes every other state ``disabled``: a key that is deactivated, compromised or destroyed must not sign
under the old code either.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018_key_states"
down_revision: str | None = "0017_console_books"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("keys") as batch:
        batch.add_column(sa.Column("compromised_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(sa.text("UPDATE keys SET state = 'suspended' WHERE state = 'disabled'"))


def downgrade() -> None:
    op.execute(sa.text("UPDATE keys SET state = 'disabled' WHERE state <> 'active'"))
    with op.batch_alter_table("keys") as batch:
        batch.drop_column("compromised_at")
