"""Anomaly baselines: per principal, requests per burst window and per hour, refusals per second.

Revision ID: 0020_anomaly_baselines
Revises: 0019_secret_disable
Create Date: 2026-12-07

Self-contained (plain column types), like every migration. The table starts empty: the baselines are
learnt again from this version on (as they were after every restart before it).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020_anomaly_baselines"
down_revision: str | None = "0019_secret_disable"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "anomaly_baselines",
        sa.Column("principal_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("start", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("principal_id", "kind", "width", "start", name="pk_anomaly_baselines"),
    )
    op.create_index("ix_anomaly_baselines_kind_start", "anomaly_baselines", ["kind", "start"])


def downgrade() -> None:
    op.drop_index("ix_anomaly_baselines_kind_start", table_name="anomaly_baselines")
    op.drop_table("anomaly_baselines")
