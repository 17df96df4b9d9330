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
import re
from collections.abc import Iterable
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
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


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
    kwargs: dict[str, Any] = {}
    fields = _fields(cls)
    for name, value in data.items():  # a request carries few of its type's many optional fields
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


def event_to_data(event: Event) -> dict[str, Any]:
    """The JSON-ready ``data`` object of ``event``."""
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


def envelope_to_dict(env: Envelope) -> dict[str, Any]:
    """Structured CloudEvent as a dict (``None`` attributes left out)."""
    out: dict[str, Any] = {
        "specversion": SPECVERSION,
        "id": env.id,
        "source": env.source,
        "type": env.type,
        "time": format_time(env.time),
        "datacontenttype": CONTENT_TYPE,
    }
    data = event_to_data(env.data)
    version = write_version(env.type, data)
    data = downcast(env.type, version, data)
    if version > 1:  # version 1 records never said so: absent means version 1
        out["dataschema"] = dataschema(env.type, version)
    for name in ("subject", "userid", "priority", "correlationid"):
        value = getattr(env, name)
        if value is not None:
            out[name] = value
    out["data"] = data
    return out


def encode(env: Envelope) -> bytes:
    """Serialise an envelope as structured CloudEvents JSON (compact, UTF-8)."""
    doc = envelope_to_dict(env)
    try:
        return orjson.dumps(doc)
    except TypeError:  # e.g. an integer beyond 64 bits in ``data``: the standard library takes it
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


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
    ce_headers = {k[3:]: v for k, v in headers if k.startswith("ce_")}
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
    user_hint = data.get("user_id") if isinstance(data, dict) else None
    event_hint = attrs.get("id")
    hints = {
        "user_id": user_hint if _usable_id(user_hint) else None,
        "event_id": event_hint if _usable_id(event_hint) else None,
    }
    missing = [a for a in _REQUIRED_ATTRS if not isinstance(attrs.get(a), str) or not attrs[a]]
    if missing:
        raise InvalidMessage(f"missing or empty CloudEvents attribute(s): {', '.join(missing)}", **hints)
    for name in _ID_ATTRS:
        value = attrs.get(name)
        if isinstance(value, str):
            try:
                check_text(value, f"attribute {name}", max_length=MAX_ID_LENGTH)
            except InvalidMessage as exc:
                raise InvalidMessage(exc.reason, **hints) from None
    if attrs["specversion"] != SPECVERSION:
        raise InvalidMessage(f"unsupported specversion {attrs['specversion']!r}", **hints)
    unknown = [k for k in attrs if k not in _KNOWN_ATTRS and not _EXTENSION_NAME.match(k)]
    if unknown:
        raise InvalidMessage(f"invalid CloudEvents attribute name(s): {', '.join(sorted(unknown))}", **hints)
    content_type = attrs.get("datacontenttype", CONTENT_TYPE)
    if not isinstance(content_type, str) or not content_type.startswith("application/json"):
        raise InvalidMessage(f"unsupported datacontenttype {content_type!r}", **hints)
    if not isinstance(data, dict):
        raise InvalidMessage("data must be a JSON object", **hints)
    try:
        event = event_from_data(attrs["type"], data, version_of(attrs["type"], attrs.get("dataschema")))
    except InvalidMessage as exc:
        raise InvalidMessage(exc.reason, **hints) from None
    try:
        time = parse_time(attrs["time"]) if "time" in attrs else datetime.now(UTC)
    except (TypeError, ValueError, AttributeError):
        raise InvalidMessage(f"invalid time {attrs.get('time')!r}", **hints) from None
    optional: dict[str, str | None] = {}
    for name in ("subject", "userid", "priority", "correlationid"):
        value = attrs.get(name)
        if value is not None and not isinstance(value, str):
            raise InvalidMessage(f"attribute {name} must be a string", **hints)
        optional[name] = value
    return Envelope(id=attrs["id"], source=attrs["source"], time=time, data=event, **optional)
