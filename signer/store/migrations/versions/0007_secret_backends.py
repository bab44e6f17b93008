"""Secrets held by reference: which backend holds a secret's value, and the reference there.

Revision ID: 0007_secret_backends
Revises: 0006_secrets
Create Date: 2026-12-07

Self-contained (plain column types), like every migration. Every secret from before this revision is
sealed in the signer (``backend`` 'sealed', no reference). A secret held by reference in AWS Secrets
Manager or OpenBao has no rows in ``secret_versions`` (its versions live in the backend) and
``current_version`` 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_secret_backends"
down_revision: str | None = "0006_secrets"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("secrets") as batch:
        batch.add_column(sa.Column("backend", sa.Text(), nullable=False, server_default="sealed"))
        batch.add_column(sa.Column("reference", sa.Text(), nullable=True))


def downgrade() -> None:
    # Without the columns a secret held by reference would read as a sealed secret with no version:
    # refuse while one exists; delete them first.
    held = (
        op.get_bind().execute(sa.text("SELECT COUNT(*) FROM secrets WHERE backend <> 'sealed'")).scalar_one()
    )
    if held:
        raise RuntimeError(f"{held} secret(s) held by reference: delete them before downgrading below 0007")
    with op.batch_alter_table("secrets") as batch:
        batch.drop_column("reference")
        batch.drop_column("backend")
