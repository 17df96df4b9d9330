"""devices keyed by (platform, device_token): a device is its platform's token (rows adopted as ios).

Before platforms were generic every device was an APNs one and the key was its token;
rows without a platform are adopted as ``ios`` (the API refused any other), then the
primary key becomes (platform, device_token), so the same token string on two
platforms is two devices. Skipped when the key already is that (a baseline created
from today's models).

Revision ID: v0006
Revises: v0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "v0006"
down_revision = "v0005"
branch_labels = None
depends_on = None

KEY = ["platform", "device_token"]


def _devices(key: list[str]) -> sa.Table:
    """The ``devices`` table (as of v0005) keyed by ``key``: what SQLite's table copy creates."""
    return sa.Table(
        "devices",
        sa.MetaData(),
        sa.Column("device_token", sa.String(length=200), nullable=False),
        sa.Column("user_id", sa.String(length=200), nullable=False),
        sa.Column("platform", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_notification_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint(*key, name="devices_pkey"),
        sa.Index("ix_devices_user", "user_id", "device_token"),
    )


def _rekey(key: list[str]) -> None:
    pk = sa.inspect(op.get_bind()).get_pk_constraint("devices")
    if list(pk["constrained_columns"]) == key:
        return
    if op.get_bind().dialect.name == "sqlite":  # no ALTER of a key: copy into a table of the new key
        with op.batch_alter_table("devices", copy_from=_devices(key), recreate="always"):
            pass
        return
    op.drop_constraint(pk["name"] or "devices_pkey", "devices", type_="primary")
    op.create_primary_key("devices_pkey", "devices", key)


def upgrade() -> None:
    op.execute(sa.text("UPDATE devices SET platform = 'ios' WHERE platform IS NULL OR platform = ''"))
    _rekey(KEY)


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM devices WHERE platform <> 'ios'"))  # the token key cannot hold them
    _rekey(["device_token"])
