"""The console's books: the address book, the token book and the registered function signatures.

Revision ID: 0017_console_books
Revises: 0016_anomalies
Create Date: 2026-12-07

Self-contained (plain column types), like every migration. Operator-maintained names the approver's
page shows beside what a request carries; nothing here decides anything.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017_console_books"
down_revision: str | None = "0016_anomalies"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "address_book",
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("address", name="pk_address_book"),
    )
    op.create_table(
        "token_book",
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("contract", sa.Text(), nullable=False),
        sa.Column("symbol", sa.Text(), nullable=False),
        sa.Column("decimals", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("chain_id", "contract", name="pk_token_book"),
    )
    op.create_table(
        "abi_functions",
        sa.Column("contract", sa.Text(), nullable=False),
        sa.Column("selector", sa.Text(), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("contract", "selector", name="pk_abi_functions"),
    )


def downgrade() -> None:
    op.drop_table("abi_functions")
    op.drop_table("token_book")
    op.drop_table("address_book")
