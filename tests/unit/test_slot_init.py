"""Events and envelopes are built by an ``__init__`` that sets each field through its slot
(``schemas.events.slot_init``): the same parameters, defaults and objects as the dataclass's own."""

from __future__ import annotations

import dataclasses
import inspect
from datetime import UTC, datetime
from typing import Any

import pytest

from schemas.envelope import Envelope
from schemas.events import EVENT_TYPES, NotificationAccepted, NotificationRequested, slot_init

CLASSES = [*EVENT_TYPES.values(), Envelope]


def _value(f: dataclasses.Field[Any]) -> Any:
    return f"{f.name}-value"


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_the_slot_init_takes_the_dataclass_fields_with_their_defaults(cls: type) -> None:
    init: Any = vars(cls)["__init__"]
    assert init.__code__.co_filename == "<string>"  # replaced: every class here fits
    fields = dataclasses.fields(cls)
    params = list(inspect.signature(init).parameters.values())[1:]
    assert [p.name for p in params] == [f.name for f in fields]
    for p, f in zip(params, fields, strict=True):
        assert p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        if f.default is not dataclasses.MISSING:
            assert p.default is f.default
        elif f.default_factory is not dataclasses.MISSING:
            assert repr(p.default) == "<factory>"
        else:
            assert p.default is inspect.Parameter.empty
    required = {f.name: _value(f) for f in fields if p_required(f)}
    built = cls(**required)
    for f in fields:
        expected = required.get(f.name, f.default if f.default is not dataclasses.MISSING else None)
        if f.default_factory is not dataclasses.MISSING:
            expected = f.default_factory()
        assert getattr(built, f.name) == expected, f.name
    assert built == cls(*required.values())  # positionally too
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(built, fields[0].name, "other")
    with pytest.raises(TypeError, match="__init__"):
        cls(**required, unknown_field=1)


def p_required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def test_a_default_factory_gives_each_object_its_own_value() -> None:
    first, second = NotificationRequested("u", "t"), NotificationRequested("u", "t")
    assert first.data == second.data == {} and first.data is not second.data
    assert dataclasses.replace(first, title="x") == NotificationRequested("u", "x")


def test_an_envelope_is_the_one_the_dataclass_would_build() -> None:
    at = datetime(2026, 12, 4, tzinfo=UTC)
    event = NotificationAccepted("n", "u", "t", "b", "high", ("websocket",), "", {}, at)
    env = Envelope("id", "src", at, event, userid="u")
    assert (env.id, env.source, env.time, env.data, env.subject, env.userid, env.priority, env.correlationid) == (
        "id",
        "src",
        at,
        event,
        None,
        "u",
        None,
        None,
    )
    assert repr(env).startswith("Envelope(id='id', source='src'")
    assert env == Envelope("id", "src", at, event, userid="u")


def test_classes_it_does_not_fit_keep_their_own_init() -> None:
    @dataclasses.dataclass(frozen=True)  # no slots
    class Plain:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        a: int

        def __post_init__(self) -> None:
            if self.a < 0:
                raise ValueError("negative")

    @dataclasses.dataclass(slots=True)  # not frozen
    class Mutable:
        a: int

    for cls in (Plain, Checked, Mutable):
        before: Any = vars(cls)["__init__"]
        assert vars(slot_init(cls))["__init__"] is before
    with pytest.raises(ValueError, match="negative"):
        Checked(-1)
