"""The codec's per-class encoding plan writes what the generic field walk wrote, for every event type."""

from __future__ import annotations

import dataclasses
import types
import typing
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from schemas.codec import event_to_data, format_time
from schemas.events import EVENT_TYPES, Event, NotificationAccepted

WHEN = datetime(2026, 12, 2, 20, 1, 2, 345678, tzinfo=timezone(timedelta(hours=2)))


def _reference(event: Event) -> dict[str, Any]:
    """The generic walk ``event_to_data`` replaced: every field tested for datetime and tuple."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        if value is None:
            continue
        if isinstance(value, datetime):
            value = format_time(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def _sample(hint: Any) -> Any:
    """A value of type ``hint`` (the first option of a union or literal)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return _sample(next(a for a in typing.get_args(hint) if a is not type(None)))
    if origin is typing.Literal:
        return typing.get_args(hint)[0]
    if origin is tuple:
        return (_sample(typing.get_args(hint)[0]), _sample(typing.get_args(hint)[0]))
    if origin is dict or hint is dict:
        return {"k": [1, "two", {"n": None}]}
    if origin is list:
        return [_sample(typing.get_args(hint)[0])]
    return {str: "x-1", int: 3, float: 1.5, bool: True, datetime: WHEN}[hint]


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
@pytest.mark.parametrize("fill", ["every field", "required fields only"])
def test_every_event_type_encodes_as_the_generic_walk_did(event_type: str, fill: str) -> None:
    cls = EVENT_TYPES[event_type]
    hints = typing.get_type_hints(cls)
    kwargs = {
        f.name: _sample(hints[f.name])
        for f in dataclasses.fields(cls)
        if fill == "every field" or (f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
    }
    event = cls(**kwargs)
    assert event_to_data(event) == _reference(event)
    assert event_to_data(event) == event_to_data(event)  # the plan, once cached, gives the same


def test_times_are_written_in_utc_with_z_and_tuples_as_lists() -> None:
    event = NotificationAccepted(
        notification_id="n",
        user_id="u",
        title="t",
        body=None,
        priority="high",
        channels=("websocket",),
        category=None,
        data={},
        requested_at=WHEN,
    )
    data = event_to_data(event)
    assert data["requested_at"] == WHEN.astimezone(UTC).isoformat().replace("+00:00", "Z")
    assert data["channels"] == ["websocket"]
