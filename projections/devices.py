"""The ``devices`` and ``contacts`` read models.

Device events are folded by ``engine.device_lifecycle.evolve``, the fold the worker's
registry uses too, so REST shows a token active exactly when the sinks push to it. A
device is its platform and its token (the row's key): the same token string on two
platforms is two devices. A device can change hands (a phone is sold), and its events then come from two
users, i.e. two partitions with no order between them: the fold orders those by event
time, and each row is read, folded and written under a row lock (Postgres), so two
projectors never overwrite each other's change. A device's ``last_notification_at`` is
the time of the latest ``delivery.succeeded`` to its token by the channel of its platform
(APNs for ``ios``) on behalf of its owner (a push to the previous owner does not count).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from engine import device_lifecycle as lifecycle
from projections.models import ContactRow, DeviceRow
from projections.postgres_writer import driver
from schemas import channels
from schemas.envelope import Envelope
from schemas.events import ContactUpdated, DeliverySucceeded, DeviceInvalidated, DeviceRegistered, DeviceUnregistered

DEVICE_EVENTS = (DeviceRegistered, DeviceUnregistered, DeviceInvalidated)
"""Event classes this module applies to ``devices``."""


def _dialect(conn: AsyncConnection) -> Any:
    return postgresql if conn.dialect.name == "postgresql" else sqlite


ATTEMPTS = 5
"""Tries of one device event when another projector inserts the same token's row meanwhile."""


def _device(row: Any) -> lifecycle.Device:
    return lifecycle.Device(row.user_id, row.status, row.registered_at, row.updated_at, row.reason)


async def apply_device(conn: AsyncConnection, env: Envelope) -> None:
    """Apply one device event (cold path: a read and at most one write per event, in log order)."""
    event = env.data
    if not isinstance(event, DEVICE_EVENTS):
        return
    token, platform = event.device_token, event.platform
    key = (DeviceRow.platform == platform, DeviceRow.device_token == token)
    for _ in range(ATTEMPTS):
        query = select(DeviceRow).where(*key)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        row = (await conn.execute(query)).first()
        before = None if row is None else _device(row)
        after = lifecycle.evolve(before, event, env.time)
        if after is None or after is before:
            return
        values: dict[str, Any] = {
            "user_id": after.owner,
            "active": after.active,
            "status": after.status,
            "reason": after.reason,
            "registered_at": after.registered_at,
            "updated_at": after.updated_at,
        }
        if isinstance(event, DeviceRegistered):
            values |= {"name": event.name}
        if row is not None:
            await conn.execute(update(DeviceRow).where(*key).values(**values))
            return
        insert = _dialect(conn).insert(DeviceRow).values(device_token=token, platform=platform, **values)
        done = await conn.execute(insert.on_conflict_do_nothing(index_elements=["platform", "device_token"]))
        if done.rowcount == 1:
            return
    raise RuntimeError(f"{platform} device {token[:8]}…: its row kept changing under {ATTEMPTS} attempts")


async def apply_contacts(conn: AsyncConnection, envelopes: list[Envelope]) -> None:
    """Upsert the latest ``contact.updated`` per user of a batch in one statement."""
    latest: dict[str, Envelope] = {}
    for env in envelopes:
        if isinstance(env.data, ContactUpdated):
            latest[env.data.user_id] = env
    if not latest:
        return
    rows = []
    for user_id, env in sorted(latest.items()):
        event = env.data
        if not isinstance(event, ContactUpdated):  # only ContactUpdated envelopes are collected above
            continue
        rows.append(
            {
                "user_id": user_id,
                "email": event.email,
                "channels": list(event.channels),
                "email_fallback_minutes": event.email_fallback_minutes,
                "webhook_url": event.webhook_url,
                "updated_at": env.time,
            }
        )
    stmt = _dialect(conn).insert(ContactRow)
    excluded = stmt.excluded
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["user_id"],
            set_={
                "email": excluded.email,
                "channels": excluded.channels,
                "email_fallback_minutes": excluded.email_fallback_minutes,
                "webhook_url": excluded.webhook_url,
                "updated_at": excluded.updated_at,
            },
            where=ContactRow.updated_at <= excluded.updated_at,
        ),
        rows,
    )


_LAST_NOTIFICATION = (
    update(DeviceRow)
    .where(
        DeviceRow.platform == bindparam("platform"),
        DeviceRow.device_token == bindparam("token"),
        DeviceRow.user_id == bindparam("owner"),
        or_(DeviceRow.last_notification_at.is_(None), DeviceRow.last_notification_at < bindparam("at")),
    )
    .values(last_notification_at=bindparam("at"))
)

_LAST_NOTIFICATION_PG = text(
    "UPDATE devices AS d SET last_notification_at = v.at"
    " FROM unnest(CAST(:platforms AS text[]), CAST(:tokens AS text[]), CAST(:owners AS text[]),"
    " CAST(:ats AS timestamptz[])) AS v(platform, token, owner, at)"
    " WHERE d.platform = v.platform AND d.device_token = v.token AND d.user_id = v.owner"
    " AND (d.last_notification_at IS NULL OR d.last_notification_at < v.at)"
)


LAST_NOTIFICATION_DRIVER = (
    "UPDATE devices AS d SET last_notification_at = v.at"
    " FROM unnest(%b::text[], %b::text[], %b::text[], %b::timestamptz[]) AS v(platform, token, owner, at)"
    " WHERE d.platform = v.platform AND d.device_token = v.token AND d.user_id = v.owner"
    " AND (d.last_notification_at IS NULL OR d.last_notification_at < v.at)"
)
"""``_LAST_NOTIFICATION_PG`` for the psycopg connection itself (binary array parameters)."""


async def apply_last_notifications(conn: AsyncConnection, envelopes: list[Envelope]) -> None:
    """Move ``last_notification_at`` of the devices a batch pushed to (one statement, one row per device)."""
    latest: dict[tuple[str, str, str], Any] = {}
    platforms = {s.name: s.platform.name for s in channels.REGISTRY.specs if s.platform is not None}
    for env in envelopes:
        event = env.data
        if isinstance(event, DeliverySucceeded) and event.channel in platforms and event.target:
            key = (platforms[event.channel], event.target, event.user_id)
            if key not in latest or latest[key] < env.time:
                latest[key] = env.time
    if not latest:
        return
    keys = sorted(latest)
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
        # Straight on the driver connection (same transaction): nearly every batch of a busy
        # log has an APNs success, and SQLAlchemy's execution of the statement cost more than it.
        pg = await driver(conn)
        by_column: list[list[Any]] = [[k[i] for k in keys] for i in range(3)]
        await pg.execute(LAST_NOTIFICATION_DRIVER, [*by_column, [latest[k] for k in keys]])
        return
    if conn.dialect.name == "postgresql":
        # One statement whatever the batch (a bulk push moves thousands of devices).
        columns = {"platforms": 0, "tokens": 1, "owners": 2}
        params: dict[str, Any] = {name: [k[i] for k in keys] for name, i in columns.items()}
        await conn.execute(_LAST_NOTIFICATION_PG, {**params, "ats": [latest[k] for k in keys]})
        return
    rows = [{"platform": p, "token": t, "owner": o, "at": latest[(p, t, o)]} for p, t, o in keys]
    await conn.execute(_LAST_NOTIFICATION, rows)
