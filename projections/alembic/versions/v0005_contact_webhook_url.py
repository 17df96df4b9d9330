"""contacts.webhook_url: where the webhook channel posts a user's notifications (added if missing).

Revision ID: v0005
Revises: v0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "v0005"
down_revision = "v0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if "webhook_url" in {c["name"] for c in sa.inspect(op.get_bind()).get_columns("contacts")}:
        return
    with op.batch_alter_table("contacts") as batch:
        batch.add_column(sa.Column("webhook_url", sa.String(length=2048), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("contacts") as batch:
        batch.drop_column("webhook_url")
