"""Policy attachments name a resource by reference: ``resource_type`` and ``resource_id`` replace ``key_id``.

Revision ID: 0010_policy_attachment_resources
Revises: 0009_audit_checkpoints
Create Date: 2026-12-07

Self-contained (plain column types), like every migration. A policy may be attached to a scope or to one
resource of any kind (a key, a secret); every attachment to a key from before this revision becomes the
reference ``('key', key_id)``, so it keeps judging the same requests and its decisions keep naming it
``key:<id>``. The API still takes and shows ``key_id`` for a key (older clients); the column goes.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_policy_attachment_resources"
down_revision: str | None = "0009_audit_checkpoints"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ONE_PLACE = "ck_policy_attachments_one_place"
_WHOLE = "ck_policy_attachments_whole_reference"


def upgrade() -> None:
    with op.batch_alter_table("policy_attachments") as batch:
        batch.add_column(sa.Column("resource_type", sa.Text(), nullable=True))
        batch.add_column(sa.Column("resource_id", sa.Text(), nullable=True))
    op.execute(
        "UPDATE policy_attachments SET resource_type = 'key', resource_id = key_id WHERE key_id IS NOT NULL"
    )
    with op.batch_alter_table("policy_attachments") as batch:
        batch.drop_constraint(_ONE_PLACE, type_="check")
        batch.drop_column("key_id")
        batch.create_check_constraint(_ONE_PLACE, "(scope IS NULL) <> (resource_id IS NULL)")
        batch.create_check_constraint(_WHOLE, "(resource_type IS NULL) = (resource_id IS NULL)")


def downgrade() -> None:
    # Without the columns an attachment to a secret would have nowhere to be: refuse while one is in
    # force (live or shadow); detach them first. Detached ones are history and are dropped.
    held = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT COUNT(*) FROM policy_attachments WHERE resource_type <> 'key' AND detached_at IS NULL"
            )
        )
        .scalar_one()
    )
    if held:
        raise RuntimeError(
            f"{held} policy attachment(s) to other resources than keys: detach them before downgrading "
            "below 0010"
        )
    op.execute("DELETE FROM policy_attachments WHERE resource_type <> 'key'")
    with op.batch_alter_table("policy_attachments") as batch:
        batch.add_column(sa.Column("key_id", sa.Text(), nullable=True))
    op.execute("UPDATE policy_attachments SET key_id = resource_id WHERE resource_type = 'key'")
    with op.batch_alter_table("policy_attachments") as batch:
        batch.drop_constraint(_WHOLE, type_="check")
        batch.drop_constraint(_ONE_PLACE, type_="check")
        batch.drop_column("resource_id")
        batch.drop_column("resource_type")
        batch.create_check_constraint(_ONE_PLACE, "(scope IS NULL) <> (key_id IS NULL)")
