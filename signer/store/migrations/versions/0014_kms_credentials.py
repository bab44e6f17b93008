"""KMS credentials: the sealed secret access keys of SigV4 credentials issued to principals.

Revision ID: 0014_kms_credentials
Revises: 0013_secret_versions
Create Date: 2026-12-07

Self-contained (plain column types), like every migration. A credential's principal, expiry and
revocation are its row in ``tokens`` (kind ``kms``); this table holds only its sealed secret.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_kms_credentials"
down_revision: str | None = "0013_secret_versions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "kms_credentials",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("kek_id", sa.Text(), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("sealed_secret", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_kms_credentials"),
        sa.ForeignKeyConstraint(["id"], ["tokens.id"], name="fk_kms_credentials_id_tokens"),
    )


def downgrade() -> None:
    op.drop_table("kms_credentials")
