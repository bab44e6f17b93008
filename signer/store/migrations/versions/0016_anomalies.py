"""Anomalies: the source addresses each principal has been seen using.

Revision ID: 0016_anomalies
Revises: 0015_usage
Create Date: 2026-12-07

Self-contained (plain column types), like every migration. The table starts empty: every principal's
first address after the upgrade is learnt quietly (see ``signer.services.anomalies``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016_anomalies"
down_revision: str | None = "0015_usage"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "anomaly_sources",
        sa.Column("principal_id", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("principal_id", "source", name="pk_anomaly_sources"),
    )


def downgrade() -> None:
    op.drop_table("anomaly_sources")
