"""One codec for every request and event: CloudEvents JSON <-> typed ``Envelope``.

Structured mode (the whole CloudEvent is the JSON value) and binary mode (``ce_*``
Kafka headers, ``data`` as the value) are both accepted on input; output is always
structured. ``data`` is validated against ``schemas/<type>/v<N>.json`` with a
compiled validator before it becomes a typed event: ``N`` is the version the record's
``dataschema`` attribute names (none: version 1), older versions are upcast to the
event class's, and channels are checked against the channel registry
(``schemas.versions``). An event is written in the oldest version that carries it, with
its ``dataschema`` when that is past version 1.
"""

from __future__ import annotations

import dataclasses
import json
import keyword
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, get_type_hints

import fastjsonschema
import orjson

from schemas.envelope import CONTENT_TYPE, SPECVERSION, Envelope
from schemas.errors import InvalidMessage
from schemas.events import EVENT_TYPES, Event
from schemas.limits import MAX_ID_LENGTH, check_text, parse_json
from schemas.versions import (
    check_channels,
    check_device,
    current_version,
    dataschema,
    downcast,
    upcast,
    version_of,
    write_version,
)

SCHEMA_DIR = Path(__file__).parent
_REQUIRED_ATTRS = ("specversion", "id", "source", "type")
_KNOWN_ATTRS = {
    "specversion",
    "id",
    "source",
    "type",
    "time",
    "subject",
    "datacontenttype",
    "dataschema",
    "data",
    "userid",
    "priority",
    "correlationid",
}
_EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,20}$")
# Identifier attributes: stored in VARCHAR(MAX_ID_LENGTH) columns, so longer ones are refused here.
_ID_ATTRS = ("id", "source", "subject", "userid", "correlationid")


def _usable_id(value: Any) -> bool:
    """Whether ``value`` may name a user or event in a rejection (non-empty, within the limit)."""
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH


def schema(event_type: str, version: int | None = None) -> dict[str, Any]:
    """The JSON Schema document of ``event_type`` version ``version`` (default: the current one)."""
    return _schema(event_type, current_version(event_type) if version is None else version)


@cache
def _schema(event_type: str, version: int) -> dict[str, Any]:
    path = SCHEMA_DIR / event_type / f"v{version}.json"
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


@cache
def _validator(event_type: str, version: int) -> Any:
    doc = dict(schema(event_type, version))
    doc.pop("$schema", None)  # fastjsonschema knows draft-07 keywords, which is all we use
    return fastjsonschema.compile(doc, formats={"date-time": _is_datetime})


def _is_datetime(value: str) -> bool:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return parsed.tzinfo is not None


def parse_time(value: str) -> datetime:
    """Parse an RFC 3339 timestamp into an aware datetime (``Z`` accepted)."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp without timezone: {value!r}")
    return parsed


def format_time(value: datetime) -> str:
    """RFC 3339 with a ``Z`` for UTC."""
    global _LAST_FORMATTED
    last = _LAST_FORMATTED
    if last[0] is value:  # the same object again (a request's time: in its acceptance, then its frame)
        return last[1]
    if value.tzinfo is UTC:  # already UTC (most times here): its ISO form ends with the offset "+00:00"
        text = value.isoformat()[:-6] + "Z"
    else:
        text = value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    _LAST_FORMATTED = (value, text)
    return text


_LAST_FORMATTED: tuple[object, str] = (object(), "")
"""The last time ``format_time`` wrote and its text (a datetime is immutable; the pair is
replaced whole, so a thread reads one pair or the other)."""


def validate_data(event_type: str, data: Any, version: int | None = None) -> None:
    """Raise ``InvalidMessage`` unless ``data`` is valid for the type's schema (default: current version)."""
    if version is None:
        version = current_version(event_type)
    try:
        _validator(event_type, version)(data)
    except fastjsonschema.JsonSchemaValueException as exc:
        hint = ""
        if version < current_version(event_type) and "channel" in exc.message:
            hint = f" (v{version}, the default without dataschema; channels added since need dataschema "
            hint += f"herald:{event_type}:v{current_version(event_type)})"
        raise InvalidMessage(f"{event_type}: {exc.message}{hint}") from None


_HINTS: dict[type[Event], dict[str, Any]] = {}


def _hints(cls: type[Event]) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = get_type_hints(cls)
    return _HINTS[cls]


_FIELDS: dict[type[Event], dict[str, tuple[bool, bool]]] = {}


def _fields(cls: type[Event]) -> dict[str, tuple[bool, bool]]:
    """``name -> (is a datetime, is a tuple)`` for each field of ``cls``, worked out once per class."""
    found = _FIELDS.get(cls)
    if found is None:
        hints = _hints(cls)
        found = _FIELDS[cls] = {
            f.name: ("datetime" in str(hints[f.name]), "tuple" in str(hints[f.name])) for f in dataclasses.fields(cls)
        }
    return found


_ENCODING: dict[type, tuple[tuple[str, bool, bool], ...]] = {}
"""Per event class: each field's name, whether it is typed a datetime, whether a tuple."""


def event_from_data(event_type: str, data: dict[str, Any], version: int | None = None) -> Event:
    """Validate ``data`` of schema ``version`` (default: the class's), upcast it, check its
    channels against the registry and build the typed event of ``event_type``."""
    cls = EVENT_TYPES.get(event_type)
    if cls is None:
        raise InvalidMessage(f"unknown event type {event_type!r}")
    read = cls.VERSION if version is None else version
    validate_data(event_type, data, read)
    data = upcast(event_type, read, data)
    check_channels(event_type, data)
    check_device(event_type, data)
    fields = _fields(cls)
    if fields.keys() >= data.keys():  # every key a field (the schemas admit no others): a plain copy
        kwargs = dict(data)
    else:
        kwargs = {name: value for name, value in data.items() if name in fields}
    times, tuples = _converted(cls)
    for name in times:
        if kwargs.get(name) is not None:
            break
    else:  # no time to parse (most requests): only the lists of tuple fields change
        for name in tuples:
            value = kwargs.get(name)
            if isinstance(value, list):
                kwargs[name] = tuple(value)
        return cls(**kwargs)
    for name, value in kwargs.items():  # in the order read, so the first bad time fails, as ever
        is_time, is_tuple = fields[name]
        if value is not None and is_time:
            kwargs[name] = parse_time(value)
        elif is_tuple and isinstance(value, list):
            kwargs[name] = tuple(value)
    return cls(**kwargs)


_CONVERTED: dict[type[Event], tuple[tuple[str, ...], tuple[str, ...]]] = {}
"""Per event class: its fields typed a datetime, and those typed a tuple but not a datetime."""


def _converted(cls: type[Event]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    found = _CONVERTED.get(cls)
    if found is None:
        fields = _fields(cls)
        times = tuple(name for name, (is_time, _) in fields.items() if is_time)
        tuples = tuple(name for name, (is_time, is_tuple) in fields.items() if is_tuple and not is_time)
        found = _CONVERTED[cls] = (times, tuples)
    return found


def event_to_data(event: Event) -> dict[str, Any]:
    """The JSON-ready ``data`` object of ``event``."""
    write = _WRITERS.get(type(event))
    if write is None:
        write = _WRITERS[type(event)] = _writer(type(event))
    return write(event)


def _event_to_data(event: Event) -> dict[str, Any]:
    """``event_to_data`` as a loop over the fields (what ``_writer``'s functions unroll)."""
    out: dict[str, Any] = {}
    plan = _ENCODING.get(type(event))
    if plan is None:
        kinds = _fields(type(event))
        plan = _ENCODING[type(event)] = tuple((f.name, *kinds[f.name]) for f in dataclasses.fields(event))
    for name, is_time, is_tuple in plan:  # only the fields typed so are converted (two tests per field saved)
        value = getattr(event, name)
        if value is None:
            continue  # absent and null mean the same; some schemas do not admit null
        if is_time and isinstance(value, datetime):
            value = format_time(value)
        elif is_tuple and isinstance(value, tuple):
            value = list(value)
        out[name] = value
    return out


_WRITERS: dict[type, Callable[[Any], dict[str, Any]]] = {}
"""Per event class: its ``event_to_data``, the loop of ``_event_to_data`` unrolled over its fields."""


def _writer(cls: type[Event]) -> Callable[[Any], dict[str, Any]]:
    """``_event_to_data`` for ``cls`` as one function: a statement per field, no loop, no lookup by name.

    The worker encodes a few events per notification; an acceptance has 18 fields, most of them
    null. Fields whose names are not plain identifiers (none today) keep the loop.
    """
    kinds = _fields(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    if not all(name.isidentifier() and not keyword.iskeyword(name) and not name.startswith("_") for name in names):
        return _event_to_data
    body = ["def write(event):", "    out = {}"]
    for name in names:
        is_time, is_tuple = kinds[name]
        value = "v"
        if is_tuple:
            value = f"list(v) if isinstance(v, tuple) else {value}"
        if is_time:
            value = f"_format_time(v) if isinstance(v, datetime) else ({value})"
        body += [f"    v = event.{name}", "    if v is not None:", f"        out[{name!r}] = {value}"]
    body.append("    return out")
    scope: dict[str, Any] = {"_format_time": format_time, "datetime": datetime}
    exec("\n".join(body), scope)  # noqa: S102 - the class's own field names
    write: Callable[[Any], dict[str, Any]] = scope["write"]
    write.__qualname__ = write.__name__ = f"event_to_data_{cls.__name__}"
    return write


def envelope_to_dict(env: Envelope) -> dict[str, Any]:
    """Structured CloudEvent as a dict (``None`` attributes left out)."""
    event_type = env.type
    out: dict[str, Any] = {
        "specversion": SPECVERSION,
        "id": env.id,
        "source": env.source,
        "type": event_type,
        "time": format_time(env.time),
        "datacontenttype": CONTENT_TYPE,
    }
    data = event_to_data(env.data)
    version = write_version(event_type, data)
    data = downcast(event_type, version, data)
    if version > 1:  # version 1 records never said so: absent means version 1
        out["dataschema"] = dataschema(event_type, version)
    if env.subject is not None:
        out["subject"] = env.subject
    if env.userid is not None:
        out["userid"] = env.userid
    if env.priority is not None:
        out["priority"] = env.priority
    if env.correlationid is not None:
        out["correlationid"] = env.correlationid
    out["data"] = data
    return out


def encode(env: Envelope) -> bytes:
    """Serialise an envelope as structured CloudEvents JSON (compact, UTF-8)."""
    doc = envelope_to_dict(env)
    try:
        return orjson.dumps(doc)
    except TypeError:  # e.g. an integer beyond 64 bits in ``data``: the standard library takes it
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def _reader_hints(attrs: dict[str, Any]) -> dict[str, str | None]:
    """The user id and event id an ``InvalidMessage`` about ``attrs`` carries, when usable."""
    data = attrs.get("data")
    user_hint = data.get("user_id") if isinstance(data, dict) else None
    event_hint = attrs.get("id")
    return {
        "user_id": user_hint if _usable_id(user_hint) else None,
        "event_id": event_hint if _usable_id(event_hint) else None,
    }


def decode(
    raw: bytes | None,
    headers: Iterable[tuple[str, bytes]] = (),
    *,
    max_bytes: int | None = None,
) -> Envelope:
    """Decode a Kafka record value (and headers) into a typed, validated envelope.

    Raises ``InvalidMessage`` with a human-readable reason for anything else; the
    exception carries the user id and event id when they could be read.
    """
    if raw is None:
        raise InvalidMessage("empty message (null value)")
    if max_bytes is not None and len(raw) > max_bytes:
        raise InvalidMessage(f"message of {len(raw)} bytes exceeds the {max_bytes}-byte limit")
    ce_headers = {k[3:]: v for k, v in headers if k.startswith("ce_")} if headers else {}
    body = parse_json(raw)  # bounded: depth, numbers, duplicate keys, lone surrogates
    if ce_headers:
        try:
            attrs: dict[str, Any] = {k: v.decode() for k, v in ce_headers.items()}
        except UnicodeDecodeError:
            raise InvalidMessage("ce_* header is not UTF-8") from None
        attrs["data"] = body
    else:
        attrs = body
    if not isinstance(attrs, dict):
        raise InvalidMessage("a CloudEvent must be a JSON object")
    data = attrs.get("data")
    missing = [a for a in _REQUIRED_ATTRS if not isinstance(attrs.get(a), str) or not attrs[a]]
    if missing:
        raise InvalidMessage(f"missing or empty CloudEvents attribute(s): {', '.join(missing)}", **_reader_hints(attrs))
    for name in _ID_ATTRS:
        value = attrs.get(name)
        if isinstance(value, str):
            try:
                check_text(value, f"attribute {name}", max_length=MAX_ID_LENGTH)
            except InvalidMessage as exc:
                raise InvalidMessage(exc.reason, **_reader_hints(attrs)) from None
    if attrs["specversion"] != SPECVERSION:
        raise InvalidMessage(f"unsupported specversion {attrs['specversion']!r}", **_reader_hints(attrs))
    unknown = (
        []
        if _KNOWN_ATTRS.issuperset(attrs)
        else [k for k in attrs if k not in _KNOWN_ATTRS and not _EXTENSION_NAME.match(k)]
    )
    if unknown:
        names = ", ".join(sorted(unknown))
        raise InvalidMessage(f"invalid CloudEvents attribute name(s): {names}", **_reader_hints(attrs))
    content_type = attrs.get("datacontenttype", CONTENT_TYPE)
    if not isinstance(content_type, str) or not content_type.startswith("application/json"):
        raise InvalidMessage(f"unsupported datacontenttype {content_type!r}", **_reader_hints(attrs))
    if not isinstance(data, dict):
        raise InvalidMessage("data must be a JSON object", **_reader_hints(attrs))
    try:
        event = event_from_data(attrs["type"], data, version_of(attrs["type"], attrs.get("dataschema")))
    except InvalidMessage as exc:
        raise InvalidMessage(exc.reason, **_reader_hints(attrs)) from None
    try:
        time = parse_time(attrs["time"]) if "time" in attrs else datetime.now(UTC)
    except (TypeError, ValueError, AttributeError):
        raise InvalidMessage(f"invalid time {attrs.get('time')!r}", **_reader_hints(attrs)) from None
    get = attrs.get
    subject, userid, priority, correlationid = get("subject"), get("userid"), get("priority"), get("correlationid")
    for value in (subject, userid, priority, correlationid):
        if value is not None and not isinstance(value, str):
            name = next(n for n in _OPTIONAL_ATTRS if get(n) is value)  # the first one of that value
            raise InvalidMessage(f"attribute {name} must be a string", **_reader_hints(attrs))
    return Envelope(attrs["id"], attrs["source"], time, event, subject, userid, priority, correlationid)


# --- Records the worker wrote itself ---------------------------------------------------------
#
# A delivery work record is a ``notification.accepted`` the worker encoded after ``decode``
# had validated the request it came from. Validating it again against its JSON Schema was
# the largest part of a push's cost in the sink (issue 9). ``decode_written`` reads such a
# record with a structural decode only: orjson, then the exact layout ``encode`` writes,
# every attribute and field of the right JSON type for the event class. A record off that
# layout in any way is left to the full ``decode`` (whose reason dead-letters it), so bad
# bytes still fail loudly. Not repeated: the content rules the edge checked (the schema's
# enums, lengths and formats inside ``data``, device platforms); the channel registry
# check is cheap and kept.

_STR, _INT, _FLOAT, _BOOL, _TIME, _STRS, _DICT = range(7)
_Plan = tuple[dict[str, tuple[int, bool]], frozenset[str]]
_PLANS: dict[type[Event], _Plan | None] = {}
"""Per event class: each field's JSON kind and whether it may be null, and the required fields;
``None`` when a field has a type the structural decode does not know (always ``decode``)."""
_KINDS = {
    "str": _STR,
    "int": _INT,
    "float": _FLOAT,
    "bool": _BOOL,
    "datetime": _TIME,
    "tuple[str, ...]": _STRS,
    "dict[str, Any]": _DICT,
}


def _plan(cls: type[Event]) -> _Plan | None:
    if cls in _PLANS:
        return _PLANS[cls]
    hints = _hints(cls)
    fields: dict[str, tuple[int, bool]] = {}
    required: set[str] = set()
    for f in dataclasses.fields(cls):
        text = str(hints[f.name]).replace("typing.", "").replace("datetime.datetime", "datetime")
        text = text.replace("<class '", "").replace("'>", "")
        nullable = text.endswith(" | None")
        kind = _KINDS.get(text.removesuffix(" | None"))
        if kind is None:
            _PLANS[cls] = None
            return None
        fields[f.name] = (kind, nullable)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.add(f.name)
    _PLANS[cls] = found = (fields, frozenset(required))
    return found


def _inexact(value: Any) -> bool:
    """Whether a float or an integer beyond 64 bits is anywhere in ``value``.

    orjson reads an integer beyond 64 bits as a float (and keeps one up to 2**64 - 1), where
    ``decode`` refuses integers beyond signed 64 bits: such records are left to ``decode``.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, float) or (isinstance(item, int) and not _INT64_MIN <= item <= _INT64_MAX):
            return True
    return False


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _field(kind: int, value: Any) -> Any:
    """``value`` (not null) as a field of ``kind`` takes it; ``_OFF`` if it is of another JSON type."""
    if kind == _STR:
        return value if isinstance(value, str) else _OFF
    if kind == _TIME:
        if not isinstance(value, str):
            return _OFF
        try:
            return parse_time(value)
        except ValueError:
            return _OFF
    if kind == _STRS:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            return _OFF
        return tuple(value)
    if kind == _DICT:
        return value if isinstance(value, dict) and not (value and _inexact(value)) else _OFF
    if kind == _INT:
        return value if isinstance(value, int) and not isinstance(value, bool) and not _inexact(value) else _OFF
    if kind == _BOOL:
        return value if isinstance(value, bool) else _OFF
    return _OFF  # _FLOAT: left to decode, as floats in _DICT


_OFF = object()
_OPTIONAL_ATTRS = ("subject", "userid", "priority", "correlationid")


def decode_written(
    raw: bytes | None, headers: Iterable[tuple[str, bytes]] = (), *, expect: type[Event]
) -> Envelope | None:
    """A record the worker wrote itself (an ``expect`` event) read without JSON Schema validation.

    The envelope ``decode`` returns for it, or ``None`` when ``raw`` is not exactly in the
    layout ``encode`` writes for ``expect`` (another type, binary mode, an unknown attribute
    or field, a JSON type the class does not take, bytes that are not JSON, a float or an
    integer beyond 64 bits anywhere in it): the caller then decodes it with ``decode``, whose reason dead-letters it.
    """
    cls = expect
    if raw is None:
        return None
    plan = _plan(cls)
    if plan is None:
        return None
    fields, required = plan
    for key, _ in headers:
        if key.startswith("ce_"):
            return None  # binary mode: never written by Herald
    try:
        attrs = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(attrs, dict) or attrs.get("type") != cls.TYPE or attrs.get("specversion") != SPECVERSION:
        return None
    if attrs.get("datacontenttype", CONTENT_TYPE) != CONTENT_TYPE or not _KNOWN_ATTRS.issuperset(attrs):
        return None
    event_id, source, stamp, data = attrs.get("id"), attrs.get("source"), attrs.get("time"), attrs.get("data")
    if not (isinstance(event_id, str) and isinstance(source, str) and isinstance(stamp, str)):
        return None
    if not (0 < len(event_id) <= MAX_ID_LENGTH and 0 < len(source) <= MAX_ID_LENGTH) or not isinstance(data, dict):
        return None
    optional: dict[str, Any] = {}
    for name in _OPTIONAL_ATTRS:
        value = attrs.get(name)
        if value is not None and not (isinstance(value, str) and len(value) <= MAX_ID_LENGTH):
            return None
        optional[name] = value
    try:
        version = version_of(cls.TYPE, attrs.get("dataschema"))
        time = parse_time(stamp)
    except (InvalidMessage, ValueError):
        return None
    if version != cls.VERSION:
        data = upcast(cls.TYPE, version, data)
    if not required.issubset(data):
        return None
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        spec = fields.get(name)
        if spec is None:
            return None  # a field the class does not have
        if value is None:
            if not spec[1]:
                return None
        else:
            value = _field(spec[0], value)
            if value is _OFF:
                return None
        kwargs[name] = value
    try:
        check_channels(cls.TYPE, data)
    except InvalidMessage:
        return None
    return Envelope(id=event_id, source=source, time=time, data=cls(**kwargs), **optional)
