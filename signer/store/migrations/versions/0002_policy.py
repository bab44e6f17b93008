"""Groups, wider grants, policy documents, the spend and rate ledger, idempotency and shadow results.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

- ``group_members``: which principals are in which group (grants and approver groups name groups).
- ``grants``: a grant names a principal *or* a group (``principal_id`` becomes nullable, ``group_name``
  is added, exactly one is set), and may carry a use count and value budgets.
- ``policy_versions``: every version of every policy document, canonical JSON and its digest, immutable.
- ``policy_attachments``: which version of a policy is in force (``live``) or evaluated beside it
  (``shadow``) at a scope or on a key; detaching keeps the row for history.
- ``ledger``: one row per reservation (limit key, amount as a decimal string: wei can exceed 64 bits).
- ``idempotency_keys``: a caller's key, the digest of the request it named and the stored response.
- ``shadow_decisions``: what a candidate policy would have decided for real traffic.

Self-contained on purpose, like 0001.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, nullable: bool) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "group_members",
        sa.Column("group_name", sa.Text(), nullable=False),
        sa.Column("principal_id", sa.Text(), nullable=False),
        _ts("added_at", False),
        sa.Column("added_by", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("group_name", "principal_id", name="pk_group_members"),
        sa.ForeignKeyConstraint(
            ["principal_id"], ["principals.id"], name="fk_group_members_principal_id_principals"
        ),
    )
    op.create_index("ix_group_members_principal_id", "group_members", ["principal_id"])

    with op.batch_alter_table("grants", recreate="auto") as batch:
        batch.alter_column("principal_id", existing_type=sa.Text(), nullable=True)
        batch.add_column(sa.Column("group_name", sa.Text(), nullable=True))
        batch.add_column(sa.Column("max_uses", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("value_budgets", sa.Text(), nullable=False, server_default="{}"))
        batch.create_check_constraint(
            "ck_grants_one_subject", "(principal_id IS NULL) <> (group_name IS NULL)"
        )
    op.create_index("ix_grants_group_name", "grants", ["group_name"])

    op.create_table(
        "policy_versions",
        sa.Column("policy_id", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("digest", sa.Text(), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=True),
        _ts("created_at", False),
        sa.PrimaryKeyConstraint("policy_id", "version", name="pk_policy_versions"),
    )
    op.create_table(
        "policy_attachments",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("policy_id", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("scope", sa.Text(), nullable=True),
        sa.Column("key_id", sa.Text(), nullable=True),
        sa.Column("mode", sa.Text(), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=True),
        _ts("created_at", False),
        _ts("detached_at", True),
        sa.PrimaryKeyConstraint("id", name="pk_policy_attachments"),
        sa.ForeignKeyConstraint(
            ["policy_id", "version"],
            ["policy_versions.policy_id", "policy_versions.version"],
            name="fk_policy_attachments_policy_id_policy_versions",
        ),
        sa.CheckConstraint("(scope IS NULL) <> (key_id IS NULL)", name="ck_policy_attachments_one_place"),
    )
    op.create_table(
        "ledger",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("limit_key", sa.Text(), nullable=False),
        sa.Column("amount", sa.Text(), nullable=False),
        _ts("window_start", False),
        _ts("window_end", True),
        sa.Column("request_id", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_ledger"),
    )
    op.create_index("ix_ledger_limit_key_window_start", "ledger", ["limit_key", "window_start"])
    op.create_table(
        "idempotency_keys",
        sa.Column("principal_id", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("request_digest", sa.Text(), nullable=False),
        sa.Column("response", sa.Text(), nullable=False),
        _ts("created_at", False),
        sa.PrimaryKeyConstraint("principal_id", "key", name="pk_idempotency_keys"),
    )
    op.create_table(
        "shadow_decisions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("attachment_id", sa.Text(), nullable=False),
        _ts("at", False),
        sa.Column("request_id", sa.Text(), nullable=True),
        sa.Column("live_effect", sa.Text(), nullable=False),
        sa.Column("candidate_effect", sa.Text(), nullable=False),
        sa.Column("differs", sa.Boolean(), nullable=False),
        sa.Column("candidate", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_shadow_decisions"),
    )
    op.create_index("ix_shadow_decisions_attachment_id", "shadow_decisions", ["attachment_id"])


def downgrade() -> None:
    for table in (
        "shadow_decisions",
        "idempotency_keys",
        "ledger",
        "policy_attachments",
        "policy_versions",
    ):
        op.drop_table(table)
    op.drop_index("ix_grants_group_name", "grants")
    with op.batch_alter_table("grants", recreate="auto") as batch:
        batch.drop_constraint("ck_grants_one_subject", type_="check")
        batch.drop_column("value_budgets")
        batch.drop_column("max_uses")
        batch.drop_column("group_name")
        batch.alter_column("principal_id", existing_type=sa.Text(), nullable=False)
    op.drop_table("group_members")
