"""The codec's per-class shortcuts give what the plain loops over the fields give: ``event_to_data``
(absent and null fields, times in any offset, tuples) and ``event_from_data`` (any key order,
times that pass the schema's format but not the parser)."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import (
    _event_to_data,
    _fields,
    decode,
    event_from_data,
    event_to_data,
    format_time,
    parse_time,
    validate_data,
)
from schemas.errors import InvalidMessage
from schemas.events import EVENT_TYPES, Event
from schemas.versions import upcast

times = st.builds(
    lambda ts, minutes, micro: (
        datetime.fromtimestamp(ts, UTC).replace(microsecond=micro).astimezone(timezone(timedelta(minutes=minutes)))
    ),
    st.integers(-(10**10), 10**10),
    st.sampled_from([0, 0, 60, -330, 840]),
    st.sampled_from([0, 1, 999_999]),
)
plain = st.one_of(st.none(), st.text(max_size=5), st.integers(), st.booleans(), st.floats(allow_nan=False))


def _value(name: str, cls: type[Event]) -> st.SearchStrategy[Any]:
    is_time, is_tuple = _fields(cls)[name]
    if is_time:
        return st.one_of(st.none(), times)
    if is_tuple:
        return st.one_of(st.none(), st.lists(st.text(max_size=3), max_size=3).map(tuple))
    return st.one_of(plain, st.dictionaries(st.text(max_size=3), plain, max_size=2))


events = st.sampled_from(sorted(EVENT_TYPES.values(), key=lambda c: c.TYPE)).flatmap(
    lambda cls: st.fixed_dictionaries({f.name: _value(f.name, cls) for f in dataclasses.fields(cls)}).map(
        lambda kwargs: cls(**kwargs)
    )
)


@settings(max_examples=500, deadline=None)
@given(event=events)
def test_the_writer_of_each_class_writes_what_the_loop_writes(event: Event) -> None:
    assert event_to_data(event) == _event_to_data(event)
    assert list(event_to_data(event)) == list(_event_to_data(event))  # the same key order


@settings(max_examples=300, deadline=None)
@given(value=times)
def test_utc_times_are_written_as_before(value: datetime) -> None:
    for moment in (value, value.astimezone(UTC)):
        assert format_time(moment) == moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _reference_from_data(cls: type[Event], data: dict[str, Any]) -> Event:
    """``event_from_data``'s construction as a plain loop over the fields read (what it must equal)."""
    kwargs: dict[str, Any] = {}
    fields = _fields(cls)
    for name, value in data.items():
        kind = fields.get(name)
        if kind is None:
            continue
        is_time, is_tuple = kind
        if value is not None and is_time:
            value = parse_time(value)
        elif is_tuple and isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def _outcome(build: Any) -> Any:
    try:
        return build()
    except Exception as exc:  # the same error, with the same message, from both
        return (type(exc), str(exc))


time_texts = st.one_of(
    times.map(format_time),
    times.map(lambda t: t.isoformat()),
    # Times the parser refuses (the schema's date-time format refuses them first, as it uses the parser).
    st.sampled_from(["2026-01-01T00:00:60Z", "2026-01-01T00:00:00z", "2026-01-02T00:00:00z"]),
)
requests = st.fixed_dictionaries(
    {"user_id": st.sampled_from(["u", "ünï"]), "title": st.just("t")},
    optional={
        "body": st.text(max_size=5),
        "priority": st.sampled_from(["high", "low"]),
        "channels": st.lists(
            st.sampled_from(["websocket", "email", "apns", "all"]), min_size=1, max_size=3, unique=True
        ),
        "category": st.just("c"),
        "data": st.dictionaries(st.text(max_size=2), st.integers(0, 9), max_size=2),
        "idempotency_key": st.one_of(st.none(), st.just("k")),
        "expires_at": st.one_of(st.none(), time_texts),
        "deliver_after": st.one_of(st.none(), time_texts),
        "badge": st.one_of(st.none(), st.integers(0, 5)),
        "push_type": st.sampled_from(["alert", "background", None]),
    },
)


@settings(max_examples=500, deadline=None)
@given(request=requests, data=st.data())
def test_requests_are_read_as_the_field_loop_reads_them(request: dict[str, Any], data: Any) -> None:
    keys = data.draw(st.permutations(list(request)))
    shuffled = {k: request[k] for k in keys}
    for version in (1, 2):
        cls = EVENT_TYPES["notification.requested"]
        read = _outcome(lambda: event_from_data(cls.TYPE, dict(shuffled), version))  # noqa: B023
        expected = _outcome(lambda: _reference_from_data(cls, validated(cls, shuffled, version)))  # noqa: B023
        assert read == expected


@settings(max_examples=300, deadline=None)
@given(event=events)
def test_any_event_is_read_as_the_field_loop_reads_it(event: Event) -> None:
    cls = type(event)
    raw = json.loads(json.dumps(event_to_data(event)))
    read = _outcome(lambda: event_from_data(cls.TYPE, dict(raw), cls.VERSION))
    if isinstance(read, Event):  # data the schema takes: the same event as the loop builds
        assert read == _reference_from_data(cls, validated(cls, raw, cls.VERSION))


def validated(cls: type[Event], data: dict[str, Any], version: int) -> dict[str, Any]:
    """``data`` as event_from_data has it after validation (defaults filled in) and upcasting."""
    data = dict(data)
    validate_data(cls.TYPE, data, version)
    return upcast(cls.TYPE, version, data)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(times, min_size=1, max_size=6), order=st.lists(st.integers(0, 5), max_size=20))
def test_a_time_formatted_again_reads_the_same(values: list[datetime], order: list[int]) -> None:
    for i in order:  # the same objects again and again, in any order
        value = values[i % len(values)]
        assert format_time(value) == value.astimezone(UTC).isoformat().replace("+00:00", "Z")


@settings(max_examples=200, deadline=None)
@given(
    attrs=st.fixed_dictionaries(
        {},
        optional={
            name: st.one_of(st.none(), st.text(max_size=3), st.integers(0, 2), st.lists(st.integers(0, 1), max_size=1))
            for name in ("subject", "userid", "priority", "correlationid")
        },
    ),
    headers=st.sampled_from([[], ()]),
)
def test_the_first_optional_attribute_that_is_not_a_string_is_named(attrs: dict[str, Any], headers: Any) -> None:
    body = {"specversion": "1.0", "type": "notification.requested", "id": "i", "source": "s", **attrs}
    body["data"] = {"user_id": "u", "title": "t"}
    bad = [n for n in ("subject", "userid", "priority", "correlationid") if attrs.get(n) is not None]
    bad = [n for n in bad if not isinstance(attrs[n], str)]
    if bad:
        with pytest.raises(InvalidMessage) as refused:
            decode(json.dumps(body).encode(), headers)
        assert refused.value.reason == f"attribute {bad[0]} must be a string"
    else:
        env = decode(json.dumps(body).encode(), headers)
        assert (env.subject, env.userid, env.priority, env.correlationid) == tuple(
            attrs.get(n) for n in ("subject", "userid", "priority", "correlationid")
        )
