"""Set-based writes shared by the read models: one statement per kind of row, whatever the count."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import JSON, ColumnElement, String, Text, any_, bindparam, cast, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection

Insert = Any
"""A dialect ``INSERT`` (Postgres or SQLite), which both offer ``on_conflict_*``."""


def insert_for(conn: AsyncConnection, table: Any) -> Insert:
    """``INSERT`` of the connection's dialect, with ``ON CONFLICT`` support."""
    module: Any = postgresql if conn.dialect.name == "postgresql" else sqlite
    return module.insert(table)


async def insert_rows(
    conn: AsyncConnection,
    table: Any,
    rows: Sequence[dict[str, Any]],
    on_conflict: Callable[[Insert], Any],
) -> None:
    """Insert ``rows`` (same keys in each) with ``on_conflict`` applied, as one statement on Postgres.

    Postgres: ``INSERT .. SELECT unnest(:col1), unnest(:col2), .. ON CONFLICT ..`` with one
    array parameter per column, so the statement text and its parse are the same for 1 or
    1,000 rows. SQLite (``herald dev``): an executemany of the same upsert.
    """
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        await conn.execute(on_conflict(insert_for(conn, table)), list(rows))
        return
    columns = table.__table__.c
    names = list(rows[0])
    selected = []
    for name in names:
        column_type = columns[name].type
        values = [row[name] for row in rows]
        if isinstance(column_type, JSON):
            # json[] does not adapt element-wise: ship text, cast each element back to json.
            param = bindparam(f"a_{name}", [None if v is None else _json(v) for v in values], type_=ARRAY(Text))
            selected.append(cast(func.unnest(param), column_type).label(name))
        elif isinstance(column_type, String):
            # text[], never varchar(n)[]: an explicit cast to varchar(n) truncates silently,
            # while assigning an over-long text to the column fails loudly.
            param = bindparam(f"a_{name}", values, type_=ARRAY(Text))
            selected.append(func.unnest(param).label(name))
        else:
            param = bindparam(f"a_{name}", values, type_=ARRAY(column_type))
            selected.append(func.unnest(param).label(name))
    stmt = insert_for(conn, table).from_select(names, select(*selected))
    await conn.execute(on_conflict(stmt))


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def among(conn: AsyncConnection, column: Any, values: Sequence[str]) -> ColumnElement[bool]:
    """``column`` is one of ``values``: ``= ANY(:array)`` on Postgres (one parameter, one plan
    whatever the count), ``IN (..)`` elsewhere."""
    if conn.dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=ARRAY(String)))  # type: ignore[no-any-return]
    return column.in_(list(values))  # type: ignore[no-any-return]
