"""``event_to_data``'s per-class functions write what the loop over the fields writes, for
every event class, with fields absent, null, naive-free datetimes in any offset, tuples."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import _event_to_data, _fields, event_to_data, format_time
from schemas.events import EVENT_TYPES, Event

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
