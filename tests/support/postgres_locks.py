"""Postgres backends of the current database waiting on a lock (a test holding a row makes the projector wait)."""

from __future__ import annotations

from typing import Any

import psycopg


async def waiting_on_a_lock(admin: psycopg.AsyncConnection[Any]) -> list[Any]:
    """The pids of this database's backends waiting on a lock (empty: none), for ``eventually``."""
    cur = await admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    return await cur.fetchall()
