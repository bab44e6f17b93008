"""KEK rotation: the rotation jobs, and the KEK id a rewrapped version's fields stay bound to.

Revision ID: 0011_kek_rotation
Revises: 0010_policy_attachment_resources
Create Date: 2026-12-07

Self-contained (plain column types), like every migration. ``secret_versions.bound_kek_id`` is NULL for
every existing row (their fields bind ``kek_id``, as they were sealed); a rotation sets it when it
rewraps a data key under a new KEK, so the sealed fields need not be touched.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_kek_rotation"
down_revision: str | None = "0010_policy_attachment_resources"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("secret_versions") as batch:
        batch.add_column(sa.Column("bound_kek_id", sa.Text(), nullable=True))
    op.create_table(
        "kek_rotations",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("old_kek_id", sa.Text(), nullable=False),
        sa.Column("new_kek_id", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("rewrapped", sa.Integer(), nullable=False),
        sa.Column("retired", sa.Text(), nullable=False),
        sa.Column("destroyed", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_by", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_kek_rotations"),
    )
    op.create_index("ix_kek_rotations_scope", "kek_rotations", ["scope", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_kek_rotations_scope", table_name="kek_rotations")
    op.drop_table("kek_rotations")
    with op.batch_alter_table("secret_versions") as batch:
        batch.drop_column("bound_kek_id")
