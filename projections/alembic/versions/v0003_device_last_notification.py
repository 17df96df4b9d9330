"""devices.last_notification_at: the latest push APNs accepted for the token (added if missing).

Revision ID: v0003
Revises: v0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "v0003"
down_revision = "v0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if "last_notification_at" in {c["name"] for c in sa.inspect(op.get_bind()).get_columns("devices")}:
        return
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("last_notification_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("last_notification_at")
