"""Deliveries by time: the console overview counts deliveries per period (created if missing).

Revision ID: v0004
Revises: v0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "v0004"
down_revision = "v0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if "ix_deliveries_at" in {i["name"] for i in sa.inspect(op.get_bind()).get_indexes("deliveries")}:
        return
    op.create_index("ix_deliveries_at", "deliveries", ["at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_deliveries_at", table_name="deliveries")
