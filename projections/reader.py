"""Reading the event log for the projector: fast, strict about shape, tolerant about size.

The edges (REST, ingest) validate every request in full before an event reaches
``herald.events``, and the events there are Herald's own facts, read thousands a second
here. So the projector checks each event's shape (known type, required fields present,
each field of its JSON type) with a plan built once per event class, instead of running
the full decoder and JSON Schema validator again (about 5x the cost). It also reads what
a newer edge refuses but an older one let into the log (e.g. deeply nested ``data``): the
log is the truth, and what is in it is projected. Anything it cannot read raises
``Unreadable``, and the projector skips that event alone (``projections.poison``); so
do NaN, Infinity and numbers beyond a double's range, which are not JSON.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from schemas.codec import parse_time
from schemas.envelope import SPECVERSION, Envelope
from schemas.errors import HeraldError
from schemas.events import EVENT_TYPES, Event


class Unreadable(HeraldError):
    """A record of the event log that is not an event the projector can read."""


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    kind: type | str
    """The Python type a JSON value must have, or ``"time"`` / ``"tuple"`` for converted ones."""
    nullable: bool
    required: bool
    default: Any = None
    """The value of an absent optional field (the dataclass field's default)."""
    factory: Callable[[], Any] | None = None
    """Makes the value of an absent optional field, instead of ``default`` (a default factory)."""


_ABSENT = object()


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text} is out of range for a JSON number")
    return value


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite)
"""The standard library's (exact for integers of any size, unlike orjson's, which reads those
beyond 64 bits as floats), refusing NaN, Infinity and out-of-range numbers: they are not
JSON, and the projector writes ``data`` back as JSON."""
_DIGITS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
"""``bytes.translate`` table: every digit to ``0``, every other byte to a space."""
_LONG_DIGITS = b"0" * 19
"""A run of digits this long may be an integer orjson reads inexactly (beyond 64 bits: as a
float; the shortest is -9223372036854775809, 19 digits)."""
_PLANS: dict[str, tuple[type[Event], tuple[_Field, ...]]] = {}
_READERS: dict[str, Callable[[dict[str, Any]], Event]] = {}
"""The event type's reader, generated from its plan on first use (see ``_generate``)."""
_OPTIONAL_ATTRS = ("subject", "userid", "priority", "correlationid")
if [f.name for f in dataclasses.fields(Envelope)] != ["id", "source", "time", "data", *_OPTIONAL_ATTRS]:
    raise RuntimeError("read_with_data builds Envelope positionally: update it to the new fields")


def read(raw: bytes | None, headers: Iterable[tuple[str, bytes]] = ()) -> Envelope:
    """The envelope in a Kafka record's value (structured mode, or binary mode with ``ce_*`` headers)."""
    return read_with_data(raw, headers)[0]


def read_with_data(raw: bytes | None, headers: Iterable[tuple[str, bytes]] = ()) -> tuple[Envelope, dict[str, Any]]:
    """``read``, and the event's ``data`` object as it is in the log without its null members
    (as ``schemas.codec.event_to_data`` writes an event: what the ledger keeps)."""
    if raw is None:
        raise Unreadable("empty record (null value)")
    if b"\\u0000" in raw:
        # Postgres text cannot hold NUL; one producer's "\u0000" must not stop the projector.
        raw = raw.replace(b"\\u0000", b"\\ufffd")
    body = _decode(raw)
    ce = {k[3:]: v for k, v in headers if k.startswith("ce_")} if headers else None
    if ce:
        try:
            attrs: Any = {k: v.decode() for k, v in ce.items()}
        except UnicodeDecodeError:
            raise Unreadable("a ce_* header is not UTF-8") from None
        attrs["data"] = body
    else:
        attrs = body
    if not isinstance(attrs, dict):
        raise Unreadable("a CloudEvent must be a JSON object")
    get = attrs.get
    event_id: Any = get("id")
    source: Any = get("source")
    event_type: Any = get("type")
    spec = get("specversion")
    if not (type(event_id) is str and type(source) is str and type(event_type) is str):
        event_id = source = event_type = ""  # the check below names the first one at fault
    if not (event_id and source and event_type):
        for name in ("id", "source", "type", "specversion"):
            if not isinstance(attrs.get(name), str) or not attrs[name]:
                raise Unreadable(f"missing or empty CloudEvents attribute {name}")
    if spec != SPECVERSION:
        if not isinstance(spec, str) or not spec:
            raise Unreadable("missing or empty CloudEvents attribute specversion")
        raise Unreadable(f"unsupported specversion {spec!r}")
    data = get("data")
    if not isinstance(data, dict):
        raise Unreadable("data must be a JSON object")
    event = _event(event_type, data)
    time = get("time")
    try:
        when = parse_time(time) if time is not None else datetime.now(UTC)
    except (TypeError, ValueError, AttributeError):
        raise Unreadable(f"invalid time {time!r}") from None
    subject, userid, priority, correlationid = get("subject"), get("userid"), get("priority"), get("correlationid")
    if not (
        (subject is None or type(subject) is str)
        and (userid is None or type(userid) is str)
        and (priority is None or type(priority) is str)
        and (correlationid is None or type(correlationid) is str)
    ):
        for name in _OPTIONAL_ATTRS:
            value = get(name)
            if value is not None and not isinstance(value, str):
                raise Unreadable(f"attribute {name} must be a string")
    # Positional, in the dataclass's field order (id, source, time, data, subject, userid,
    # priority, correlationid): a little cheaper than keywords, thousands of times a second.
    envelope = _envelope(event_id, source, when, event, subject, userid, priority, correlationid)
    if b"null" in raw:  # a null member perhaps (else none: a C substring search, no dict walk)
        data = {k: v for k, v in data.items() if v is not None}
    return envelope, data


def _decode(raw: bytes) -> Any:
    """The JSON value in ``raw``, exactly as the standard library reads it (``_DECODER``).

    orjson reads faster, and the same for every text both accept, except integers beyond
    64 bits (it reads them as floats): a text with a run of 19 digits or more goes to the
    standard library, as does one orjson refuses (the standard library then says what is
    wrong, or reads what only it accepts, e.g. a lone surrogate escape). Both refuse NaN,
    Infinity and numbers beyond a double's range.
    """
    if _LONG_DIGITS not in raw.translate(_DIGITS):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    try:
        return _DECODER.decode(raw.decode())  # decoding first spares json its encoding detection
    except (ValueError, RecursionError) as exc:
        raise Unreadable(f"not JSON: {type(exc).__name__}: {exc}") from None


def _event(event_type: str, data: dict[str, Any]) -> Event:
    reader = _READERS.get(event_type) or _generate(event_type)
    return reader(data)


def _generate(event_type: str) -> Callable[[dict[str, Any]], Event]:
    """A reader of ``event_type``'s ``data`` that checks each field of its plan, unrolled.

    The usual cases are decided inline, without a call: a field of exactly its type is
    taken as it is (one ``type() is`` test), an absent optional field takes its default,
    a list of strings becomes a tuple, a timestamp string is parsed. Anything else goes to
    ``_converted``, which applies the plan's rules (null, numbers, the errors). The event is
    built with positional arguments.
    """
    cls, fields = _PLANS.get(event_type) or _plan(event_type)
    lines = ["def read(data):", "    get = data.get"]
    names: dict[str, Any] = {
        "cls": cls,
        "convert": _converted,
        "ABSENT": _ABSENT,
        "event_type": event_type,
        "parse_time": parse_time,
        "STRINGS": frozenset({str}),
    }
    args = []
    for i, f in enumerate(fields):
        names[f"f{i}"] = f
        names[f"d{i}"] = f.default
        value = f"v{i}"
        convert = f"convert(event_type, f{i}, {value})"
        # An absent optional field without a factory: its default, as ``_converted`` would.
        absent = f"{value} = d{i} if {value} is ABSENT else {convert}"
        if f.required or f.factory is not None:
            absent = f"{value} = {convert}"
        lines.append(f"    {value} = get({f.name!r}, ABSENT)")
        if isinstance(f.kind, type):
            names[f"k{i}"] = f.kind
            lines += [f"    if type({value}) is not k{i}:", f"        {absent}"]
        elif f.kind == "tuple":
            lines += [
                f"    if type({value}) is list and set(map(type, {value})) <= STRINGS:",
                f"        {value} = tuple({value})",
                "    else:",
                f"        {absent}",
            ]
        else:  # "time": a string is parsed here; what does not parse gets its error from ``_converted``
            lines += [
                f"    if type({value}) is str:",
                "        try:",
                f"            {value} = parse_time({value})",
                "        except (TypeError, ValueError, AttributeError):",
                f"            {value} = {convert}",
                "    else:",
                f"        {absent}",
            ]
        args.append(value)
    setters = _setters(cls, [f.name for f in fields])
    if setters is None:
        lines.append(f"    return cls({', '.join(args)})")
    else:  # the frozen dataclass's __init__ without its per-field object.__setattr__ (see _setters)
        names["new"] = object.__new__
        lines.append("    event = new(cls)")
        for i, (setter, value) in enumerate(zip(setters, args, strict=True)):
            names[f"s{i}"] = setter
            lines.append(f"    s{i}(event, {value})")
        lines.append("    return event")
    exec("\n".join(lines), names)  # noqa: S102 - text built from the event classes' own field names
    reader: Callable[[dict[str, Any]], Event] = names["read"]
    _READERS[event_type] = reader
    return reader


def _setters(cls: type, names: list[str]) -> list[Callable[[Any, Any], None]] | None:
    """The slot setters of ``cls``'s fields ``names``, in order, if ``object.__new__(cls)``
    and one call of each is what the class's own ``__init__`` does with those values.

    A frozen dataclass's generated ``__init__`` sets each field with ``object.__setattr__``
    (a lookup by name each); the slot's descriptor sets it directly, about half the cost
    (2.7 instead of 5.4 us for ``NotificationAccepted``'s 18 fields on the benchmark
    machine). ``None`` (build with the constructor) for a class that is not a slotted
    dataclass of exactly those fields, or that has a ``__post_init__``.
    """
    if not dataclasses.is_dataclass(cls) or hasattr(cls, "__post_init__"):
        return None
    if [f.name for f in dataclasses.fields(cls)] != names or getattr(cls, "__slots__", None) is None:
        return None
    if cls.__new__ is not object.__new__:
        return None
    setters = []
    for name in names:
        descriptor = inspect.getattr_static(cls, name, None)
        if type(descriptor) is not types.MemberDescriptorType:
            return None
        setters.append(descriptor.__set__)
    return setters


def _converted(event_type: str, f: _Field, value: Any) -> Any:
    """A field's value that is not exactly of its type: converted, its default, or ``Unreadable``."""
    name, kind = f.name, f.kind
    if value is _ABSENT:
        if f.required:
            raise Unreadable(f"{event_type}: missing {name}")
        return f.default if f.factory is None else f.factory()
    if value is None:
        if not f.nullable:
            raise Unreadable(f"{event_type}: {name} must not be null")
        return None
    if kind == "time":
        try:
            return parse_time(value)
        except (TypeError, ValueError, AttributeError):
            raise Unreadable(f"{event_type}: {name} is not a timestamp") from None
    if kind == "tuple":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise Unreadable(f"{event_type}: {name} must be a list of strings")
        return tuple(value)
    if not isinstance(kind, type) or not _fits(value, kind):
        raise Unreadable(f"{event_type}: {name} must be of type {getattr(kind, '__name__', kind)}")
    return value


def _fits(value: Any, kind: type) -> bool:
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, int | float)
    return isinstance(value, kind)


def _plan(event_type: str) -> tuple[type[Event], tuple[_Field, ...]]:
    cls = EVENT_TYPES.get(event_type)
    if cls is None:
        raise Unreadable(f"unknown event type {event_type!r}")
    hints = typing.get_type_hints(cls)
    fields = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        args = typing.get_args(hint)
        nullable = isinstance(hint, types.UnionType) and type(None) in args
        base = next((a for a in args if a is not type(None)), hint) if nullable else hint
        origin = typing.get_origin(base)
        kind: type | str
        if base is datetime:
            kind = "time"
        elif origin is tuple:
            kind = "tuple"
        elif origin is dict:
            kind = dict
        else:
            kind = base
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if f.default is dataclasses.MISSING else f.default
        factory = None if f.default_factory is dataclasses.MISSING else f.default_factory
        fields.append(_Field(f.name, kind, nullable, required, default, factory))
    plan = (cls, tuple(fields))
    _PLANS[event_type] = plan
    return plan


def _builder(cls: type) -> Callable[..., Any]:
    """``cls``'s constructor taking every field positionally (no defaults), its fields set by their slot
    descriptors (``_setters``) when that is what its ``__init__`` does: 2.8 -> 1.4 us for an
    ``Envelope``."""
    names = [f.name for f in dataclasses.fields(cls)]
    setters = _setters(cls, names)
    if setters is None:
        return cls
    params = ", ".join(f"v{i}" for i in range(len(names)))
    lines = [f"def build({params}):", "    built = new(cls)"]
    lines += [f"    s{i}(built, v{i})" for i in range(len(names))]
    lines.append("    return built")
    scope: dict[str, Any] = {"new": object.__new__, "cls": cls}
    scope.update({f"s{i}": setter for i, setter in enumerate(setters)})
    exec("\n".join(lines), scope)  # noqa: S102 - text built from the class's own field count
    build: Callable[..., Any] = scope["build"]
    return build


_envelope: Callable[..., Envelope] = _builder(Envelope)
