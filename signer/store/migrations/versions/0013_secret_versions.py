"""Secret versions and rotation: version states, check-and-set revisions, pins, overlap and intervals.

Revision ID: 0013_secret_versions
Revises: 0012_audit_sinks
Create Date: 2026-12-07

Self-contained (plain column types), like every migration. Existing versions start ``enabled`` and
existing secrets at revision 1, unpinned, with no overlap and no rotation interval (as before).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_secret_versions"
down_revision: str | None = "0012_audit_sinks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("secrets") as batch:
        batch.add_column(sa.Column("revision", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("pins", sa.Text(), nullable=False, server_default="{}"))
        batch.add_column(sa.Column("overlap_seconds", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("rotation_interval_seconds", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("rotation_due_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("overdue_notified_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_secrets_rotation_due_at", ["rotation_due_at"])
    with op.batch_alter_table("secret_versions") as batch:
        batch.add_column(sa.Column("state", sa.Text(), nullable=False, server_default="enabled"))
        batch.add_column(sa.Column("reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("state_changed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("state_changed_by", sa.Text(), nullable=True))
        batch.add_column(sa.Column("disable_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_secret_versions_disable_at", ["disable_at"])
    op.create_table(
        "secret_folder_defaults",
        sa.Column("folder", sa.Text(), nullable=False),
        sa.Column("rotation_interval_seconds", sa.Integer(), nullable=True),
        sa.Column("overlap_seconds", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("folder", name="pk_secret_folder_defaults"),
    )


def downgrade() -> None:
    # Below 0013 every version reads as enabled: a disabled, destroyed or staged one would come back.
    held = (
        op.get_bind()
        .execute(sa.text("SELECT COUNT(*) FROM secret_versions WHERE state <> 'enabled'"))
        .scalar_one()
    )
    if held:
        raise RuntimeError(f"{held} secret version(s) not enabled: cannot downgrade below 0010")
    op.drop_table("secret_folder_defaults")
    with op.batch_alter_table("secret_versions") as batch:
        batch.drop_index("ix_secret_versions_disable_at")
        for name in ("disable_at", "state_changed_by", "state_changed_at", "reason", "state"):
            batch.drop_column(name)
    with op.batch_alter_table("secrets") as batch:
        batch.drop_index("ix_secrets_rotation_due_at")
        for name in (
            "overdue_notified_at",
            "rotation_due_at",
            "rotation_interval_seconds",
            "overlap_seconds",
            "pins",
            "revision",
        ):
            batch.drop_column(name)
