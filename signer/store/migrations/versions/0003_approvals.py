"""Approvals: pending requests bound to a payload digest, one vote per identity, approver public keys,
webhooks per approver group and their outbox.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

Self-contained (plain column types), like every migration.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, nullable: bool) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "approval_requests",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("resource_id", sa.Text(), nullable=False),
        sa.Column("requester_id", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("payload_digest", sa.Text(), nullable=False),
        sa.Column("view", sa.Text(), nullable=False),
        sa.Column("requirements", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        _ts("created_at", False),
        _ts("expires_at", False),
        _ts("updated_at", False),
        sa.Column("result", sa.Text(), nullable=True),
        _ts("result_fetched_at", True),
        sa.PrimaryKeyConstraint("id", name="pk_approval_requests"),
        sa.ForeignKeyConstraint(
            ["requester_id"], ["principals.id"], name="fk_approval_requests_requester_id_principals"
        ),
    )
    op.create_index("ix_approval_requests_state_expires_at", "approval_requests", ["state", "expires_at"])
    op.create_index("ix_approval_requests_requester_id", "approval_requests", ["requester_id"])
    op.create_table(
        "approval_votes",
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.Column("approver_id", sa.Text(), nullable=False),
        sa.Column("token_id", sa.Text(), nullable=False),
        sa.Column("decision", sa.Text(), nullable=False),
        sa.Column("digest", sa.Text(), nullable=False),
        sa.Column("signature_scheme", sa.Text(), nullable=True),
        sa.Column("signature", sa.Text(), nullable=True),
        _ts("created_at", False),
        sa.PrimaryKeyConstraint("request_id", "approver_id", name="pk_approval_votes"),
        sa.ForeignKeyConstraint(
            ["request_id"], ["approval_requests.id"], name="fk_approval_votes_request_id_approval_requests"
        ),
        sa.ForeignKeyConstraint(
            ["approver_id"], ["principals.id"], name="fk_approval_votes_approver_id_principals"
        ),
    )
    op.create_table(
        "approver_keys",
        sa.Column("principal_id", sa.Text(), nullable=False),
        sa.Column("scheme", sa.Text(), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        _ts("created_at", False),
        sa.PrimaryKeyConstraint("principal_id", name="pk_approver_keys"),
        sa.ForeignKeyConstraint(
            ["principal_id"], ["principals.id"], name="fk_approver_keys_principal_id_principals"
        ),
    )

    op.create_table(
        "approval_webhooks",
        sa.Column("group_name", sa.Text(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        _ts("created_at", False),
        sa.Column("created_by", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("group_name", name="pk_approval_webhooks"),
    )
    op.create_table(
        "webhook_outbox",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("group_name", sa.Text(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("event", sa.Text(), nullable=False),
        _ts("created_at", False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _ts("next_attempt_at", False),
        _ts("delivered_at", True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_outbox"),
    )
    op.create_index(
        "ix_webhook_outbox_delivered_at_next_attempt_at",
        "webhook_outbox",
        ["delivered_at", "next_attempt_at"],
    )


def downgrade() -> None:
    for table in (
        "webhook_outbox",
        "approval_webhooks",
        "approver_keys",
        "approval_votes",
        "approval_requests",
    ):
        op.drop_table(table)
