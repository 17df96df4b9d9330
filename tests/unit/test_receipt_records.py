"""The gateway writes a receipt's record directly (``api.ws.receipts.DeliveredRecords``): byte for byte
what the general path, ``encode(websocket_delivered(...))``, writes, for any client view."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from api.ws.receipts import DeliveredRecords
from engine.delivery import websocket_delivered
from schemas.codec import decode, encode, format_time

_text = st.text(min_size=1, max_size=40)
# hypothesis takes naive bounds and gives the times the zone (UTC) of ``timezones``
_EARLIEST = datetime(2001, 1, 1, tzinfo=UTC).replace(tzinfo=None)
_LATEST = datetime(2090, 1, 1, tzinfo=UTC).replace(tzinfo=None)
_optional = st.one_of(st.none(), st.just(""), _text, st.integers(), st.just(["x"]))


@st.composite
def _views(draw: st.DrawFn) -> dict[str, Any]:
    view: dict[str, Any] = {"id": draw(_text), "user_id": draw(_text)}
    for name in ("priority", "bulk_id"):
        if draw(st.booleans()):
            view[name] = draw(st.one_of(st.sampled_from(["high", "medium", "low"]), _optional))
    if draw(st.booleans()):
        view["title"] = draw(_text)  # a view carries more; the receipt reads none of it
    return view


@settings(max_examples=400, deadline=None)
@given(
    view=_views(),
    node=_text,
    connection=_text,
    via=st.sampled_from(["live", "replay"]),
    age_us=st.integers(min_value=-5_000_000, max_value=10**11),
    now=st.datetimes(min_value=_EARLIEST, max_value=_LATEST, timezones=st.just(UTC)),
)
def test_a_receipts_record_is_the_general_paths(
    view: dict[str, Any], node: str, connection: str, via: str, age_us: int, now: datetime
) -> None:
    created = now - timedelta(microseconds=age_us)  # also after now: the latency is then 0
    env = websocket_delivered(view, node=node, connection=connection, via=via, created_at=created, now=now)
    record = DeliveredRecords(node).record(view, connection, via, created, now, format_time(now))
    assert record.value == encode(env)
    assert (record.type, record.userid, record.subject, record.correlationid) == (
        env.type,
        env.userid,
        env.subject,
        env.correlationid,
    )


def test_a_receipts_record_reads_back_as_the_event() -> None:
    now = datetime(2026, 12, 5, 21, 0, 0, 123456, tzinfo=UTC)
    view = {"id": "n-1", "user_id": "ana", "priority": "high", "bulk_id": "bulk-7", "created_at": "x"}
    record = DeliveredRecords("node-a").record(view, "c1", "replay", now - timedelta(milliseconds=12.5), now, "t")
    env = decode(record.value.replace(b'"t"', f'"{format_time(now)}"'.encode()))
    assert env.type == "delivery.succeeded"
    assert (
        env.data
        == websocket_delivered(
            view, node="node-a", connection="c1", via="replay", created_at=now - timedelta(milliseconds=12.5), now=now
        ).data
    )
    assert (env.subject, env.userid, env.priority, env.correlationid) == ("n-1", "ana", "high", "bulk-7")
