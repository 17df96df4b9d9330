"""The projector's reader and row preparation: exact numbers, no NaN, any nesting the log holds."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from projections.batch import prepare
from projections.reader import Unreadable, read_with_data
from schemas.codec import encode
from schemas.envelope import Envelope
from schemas.events import NotificationAccepted


def _record(data: dict[str, Any]) -> bytes:
    event = NotificationAccepted(
        notification_id="n-1",
        user_id="alice",
        title="t",
        body="b",
        priority="high",
        channels=("websocket",),
        category="",
        data={"marker": "here"},
        requested_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    raw = encode(Envelope(id="e-1", source="test", time=datetime(2026, 1, 1, tzinfo=UTC), data=event))
    return raw.replace(b'{"marker":"here"}', json.dumps(data, separators=(",", ":")).encode())


def test_integers_beyond_64_bits_are_read_and_written_exactly() -> None:
    big = 2**70 + 1
    env, data = read_with_data(_record({"big": big, "small": -5, "f": 1.5}))
    assert isinstance(env.data, NotificationAccepted) and env.data.data == {"big": big, "small": -5, "f": 1.5}
    ledger = prepare(0, 7, env, data).ledger
    assert json.loads(ledger["data_json"])["data"] == {"big": big, "small": -5, "f": 1.5}


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_nan_infinity_and_out_of_range_numbers_are_unreadable(number: bytes) -> None:
    raw = _record({"x": 1}).replace(b'{"x":1}', b'{"x":' + number + b"}")
    with pytest.raises(Unreadable, match="not JSON"):
        read_with_data(raw)


def test_data_nested_deeper_than_orjson_writes_is_still_prepared() -> None:
    deep: dict[str, Any] = {"leaf": True}
    for _ in range(400):
        deep = {"d": deep}
    env, data = read_with_data(_record(deep))
    text = prepare(0, 1, env, data).ledger["data_json"]
    assert text.count('{"d":') == 400 and json.loads(text)["data"]["d"]["d"]["d"] is not None


def test_a_field_of_the_wrong_type_is_unreadable() -> None:
    raw = _record({}).replace(b'"priority":"high"', b'"priority":7')
    with pytest.raises(Unreadable, match="priority must be of type str"):
        read_with_data(raw)
