"""The projector's reader and row preparation: exact numbers, no NaN, any nesting the log holds."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from projections import reader
from projections.batch import prepare
from projections.reader import Unreadable, read_with_data
from schemas.codec import encode, parse_time
from schemas.envelope import Envelope
from schemas.events import EVENT_TYPES, Event, NotificationAccepted


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


def test_the_ledger_keeps_data_without_its_null_members_as_the_typed_event_would_write_it() -> None:
    raw = _record({"nested": None, "text": "null"})
    assert raw.count(b":null") == 1
    with_null = raw.replace(b'"category":""', b'"category":"","collapse_key":null')
    for record in (raw, with_null):
        env, data = read_with_data(record)
        assert "collapse_key" not in data
        ledger = prepare(0, 7, env, data).ledger
        assert ledger["data"] == prepare(0, 7, env).ledger["data"]  # rebuilt from the typed event
        assert json.loads(ledger["data_json"])["data"] == {"nested": None, "text": "null"}  # nested nulls kept


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


# The generated per-type readers against the plain reading of a plan (the reader before they
# were generated), on data of every event type with fields present, absent, null or of any
# JSON type; and orjson's fast path against the standard library's reading.

_JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-01T00:00:00", "x"]),
)
_JSON = st.recursive(
    _JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


def _plain_reading(event_type: str, data: dict[str, Any]) -> Event:
    cls, fields = reader._plan(event_type)
    kwargs: dict[str, Any] = {}
    for f in fields:
        value = data.get(f.name, reader._ABSENT)
        if value is reader._ABSENT:
            if f.required:
                raise Unreadable(f"{event_type}: missing {f.name}")
            continue
        if value is None:
            if not f.nullable:
                raise Unreadable(f"{event_type}: {f.name} must not be null")
        elif f.kind == "time":
            try:
                value = parse_time(value)
            except (TypeError, ValueError, AttributeError):
                raise Unreadable(f"{event_type}: {f.name} is not a timestamp") from None
        elif f.kind == "tuple":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise Unreadable(f"{event_type}: {f.name} must be a list of strings")
            value = tuple(value)
        elif not isinstance(f.kind, type) or not reader._fits(value, f.kind):
            raise Unreadable(f"{event_type}: {f.name} must be of type {getattr(f.kind, '__name__', f.kind)}")
        kwargs[f.name] = value
    return cls(**kwargs)


@st.composite
def _event_data(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    event_type = draw(st.sampled_from(sorted(EVENT_TYPES)))
    _, fields = reader._plan(event_type)
    data: dict[str, Any] = {}
    for f in fields:
        shape = draw(st.integers(0, 9))
        if shape == 0:
            continue  # absent
        if shape == 1:
            data[f.name] = draw(_JSON)
        elif f.kind == "time":
            data[f.name] = "2026-02-03T04:05:06.789Z"
        elif f.kind == "tuple":
            data[f.name] = draw(st.lists(st.text(max_size=4), max_size=3))
        elif f.kind is dict:
            data[f.name] = draw(st.dictionaries(st.text(max_size=4), _JSON, max_size=3))
        elif f.kind is bool:
            data[f.name] = draw(st.booleans())
        elif f.kind in (int, float):
            data[f.name] = draw(st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False))
        else:
            data[f.name] = draw(st.text(max_size=6))
    return event_type, data


def _outcome(read: Any, event_type: str, data: dict[str, Any]) -> Any:
    try:
        return read(event_type, data)
    except Unreadable as exc:
        return ("unreadable", str(exc))


@settings(max_examples=600, deadline=None)
@given(_event_data())
def test_generated_readers_read_as_the_plan_says(case: tuple[str, dict[str, Any]]) -> None:
    event_type, data = case
    assert _outcome(reader._event, event_type, data) == _outcome(_plain_reading, event_type, data)


@settings(max_examples=400, deadline=None)
@given(_JSON)
def test_fast_json_reading_equals_the_standard_librarys(value: Any) -> None:
    raw = json.dumps(value).encode()
    fast = reader._decode(raw)
    assert json.dumps(fast) == json.dumps(value)
    assert repr(fast) == repr(reader._DECODER.decode(raw.decode()))


@pytest.mark.parametrize("number", [-(2**63) - 1, 2**64, -(10**18), 10**19, 2**64 - 1])
def test_integers_near_and_beyond_64_bits_stay_integers(number: int) -> None:
    value = reader._decode(json.dumps({"n": number, "s": "x"}).encode())
    assert value == {"n": number, "s": "x"} and type(value["n"]) is int
