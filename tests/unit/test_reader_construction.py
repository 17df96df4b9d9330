"""The reader builds events and envelopes without their constructors (slot setters): the
objects must be the very ones the constructors build, with every field set."""

from __future__ import annotations

import dataclasses
import typing
from datetime import UTC, datetime
from typing import Any

import pytest

from projections import reader
from projections.reader import read_with_data
from schemas.codec import encode
from schemas.envelope import Envelope
from schemas.events import EVENT_TYPES, Event

WHEN = datetime(2026, 3, 4, 5, 6, 7, 890000, tzinfo=UTC)


def _value(hint: Any, name: str) -> Any:
    """A value of the field's type that is not its default."""
    args = typing.get_args(hint)
    if type(None) in args:
        hint = next(a for a in args if a is not type(None))
    origin = typing.get_origin(hint)
    if hint is datetime:
        return WHEN
    if origin is tuple:
        return ("websocket", "email")
    if origin is dict or hint is dict:
        return {"k": [1, "x", None]}
    if hint is bool:
        return True
    if hint is int:
        return 7
    if hint is float:
        return 2.5
    return f"{name}-value"


def _full(cls: type[Event]) -> Event:
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: _value(hints[f.name], f.name) for f in dataclasses.fields(cls)})


def _minimal(cls: type[Event]) -> Event:
    hints = typing.get_type_hints(cls)
    required = [
        f
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    return cls(**{f.name: _value(hints[f.name], f.name) for f in required})


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
@pytest.mark.parametrize("make", [_full, _minimal], ids=["full", "minimal"])
def test_read_objects_equal_constructed_ones(event_type: str, make: Any) -> None:
    event = make(EVENT_TYPES[event_type])
    env = Envelope("e-1", "test", WHEN, event, "n-1", "alice", "high", "c-1")
    got, _ = read_with_data(encode(env))
    assert got == env and repr(got) == repr(env)
    assert type(got) is Envelope and type(got.data) is type(event)
    for f in dataclasses.fields(event):  # every slot set (an unset one raises AttributeError)
        assert getattr(got.data, f.name) == getattr(event, f.name)
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.id = "other"  # type: ignore[misc]  # still frozen


def test_default_factories_give_each_event_its_own_value() -> None:
    cls = EVENT_TYPES["notification.requested"]
    env = Envelope("e-1", "test", WHEN, _minimal(cls))
    first, _ = read_with_data(encode(env))
    second, _ = read_with_data(encode(env))
    assert first.data.data == {} and first.data.data is not second.data.data  # type: ignore[attr-defined]


def test_classes_whose_init_does_more_are_built_by_their_constructor() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        a: int

        def __post_init__(self) -> None:
            raise ValueError("checked")

    @dataclasses.dataclass(frozen=True)
    class Unslotted:
        a: int

    assert reader._setters(Checked, ["a"]) is None
    assert reader._setters(Unslotted, ["a"]) is None
    assert reader._builder(Unslotted) is Unslotted
    assert reader._setters(Envelope, ["id", "source"]) is None  # not exactly its fields
    event = _minimal(EVENT_TYPES["notification.read"])
    built = reader._builder(Envelope)("e", "s", WHEN, event, None, "u", None, None)
    assert built == Envelope("e", "s", WHEN, event, userid="u")
