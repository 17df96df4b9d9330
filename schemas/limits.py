"""Input limits shared by every edge (Kafka ingest, REST bodies, WebSocket frames), and
the one bounded JSON parser that enforces the structural ones.

Why a parser of our own: ``json.loads`` accepts documents it cannot be trusted with. A
few KB of brackets raise ``RecursionError`` in it (or later in anything that walks the
value); ``NaN``/``Infinity`` and ``1e999`` are not JSON and break Postgres and browsers;
a 5,000-digit integer raises ``ValueError``; duplicate keys are read differently by
different parsers; a ``\\ud800`` escape yields a string that cannot be encoded again.
``parse_json`` refuses all of these with ``InvalidMessage`` and a reason a producer can act on.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from schemas.errors import InvalidMessage, MalformedJSON

MAX_JSON_DEPTH = 32
"""Deepest nesting of objects and arrays in any JSON document Herald accepts, the outermost
object counting as 1 (so a request's ``data.data`` may nest 29 more levels)."""

MAX_ID_LENGTH = 200
"""Longest identifier (event/notification id, user id, idempotency key, device token,
correlation id, source) accepted anywhere; equals the storage columns (``VARCHAR(200)``),
so nothing is ever truncated on the way in: longer ones are refused."""

MAX_INTEGER = 2**63 - 1
"""Integers in JSON input must fit in 64 bits (what Postgres, Kafka clients and most JSON
libraries round-trip exactly)."""

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def parse_json(raw: bytes | str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse ``raw`` as strict JSON, or raise ``InvalidMessage`` saying why not.

    Refused: invalid UTF-8, malformed JSON, nesting deeper than ``max_depth``, ``NaN``,
    ``Infinity`` and numbers out of range, duplicate object keys, lone surrogates.
    """
    if type(raw) is bytes:
        value = _compact(raw)
        if value is not _NOT_COMPACT:
            if raw.count(b"[") + raw.count(b"{") > max_depth:
                _walk(value, max_depth)
            return value
    if isinstance(raw, str):
        text = raw
        data = raw.encode("utf-8", "surrogatepass")
    else:
        data = raw
        try:
            text = raw.decode("utf-8")  # strict: UTF-8-encoded surrogates are invalid UTF-8
        except UnicodeDecodeError as exc:
            raise MalformedJSON(f"malformed JSON: invalid UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        raise InvalidMessage(f"JSON nested deeper than {max_depth} levels") from None
    except json.JSONDecodeError as exc:
        raise MalformedJSON(f"malformed JSON: {exc}") from None
    except ValueError as exc:  # from our hooks
        raise InvalidMessage(str(exc)) from None
    # Cheap pre-checks keep the walk off the common path: a document with fewer opening
    # brackets than the limit cannot be deeper, and one without a surrogate escape or
    # character has none to find.
    deep = data.count(b"[") + data.count(b"{") > max_depth
    if deep or _SURROGATE_ESCAPE.search(data) or (isinstance(raw, str) and _SURROGATE.search(text)):
        _walk(value, max_depth)
    return value


_NOT_COMPACT = object()


def _compact(raw: bytes) -> Any:
    """``raw`` parsed by orjson if it is exactly what ``orjson.dumps`` writes for the value read, else ``_NOT_COMPACT``.

    Such a document is what the strict parser below reads to an equal value (the same
    dicts in the same key order, strings, integers, floats): no duplicate key (the one
    orjson kept would write a shorter document), no escaped surrogate (orjson refuses a
    lone one; a pair writes back as UTF-8), no integer past 53 bits (refused on the way
    back out, so the strict parser judges anything near the 64-bit limit), no float but
    one written in its shortest form (orjson and ``float`` both round correctly), no
    ``NaN``, infinity, byte order mark or invalid UTF-8 (orjson refuses them). Producers
    that write with orjson (the api, Herald's own records) take this path; any other
    document, valid or not, takes the strict parser, which gives the reason for a refusal.
    Only the depth is left to check (``parse_json``).
    """
    try:
        value = orjson.loads(raw)
        if orjson.dumps(value, option=orjson.OPT_STRICT_INTEGER) == raw:
            return value
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        pass
    return _NOT_COMPACT


def check_text(value: str, what: str, *, max_length: int | None = None) -> None:
    """Raise ``InvalidMessage`` if ``value`` is longer than ``max_length`` or not encodable text."""
    if max_length is not None and len(value) > max_length:
        raise InvalidMessage(f"{what} of {len(value)} characters exceeds the {max_length}-character limit")
    if _SURROGATE.search(value):
        raise InvalidMessage(f"{what} contains a lone surrogate (not valid Unicode text)")


def _walk(value: Any, max_depth: int) -> None:
    # Iterative, so the check itself cannot overflow the stack.
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth > max_depth:
                raise InvalidMessage(f"JSON nested deeper than {max_depth} levels")
            for key, child in item.items():
                if _SURROGATE.search(key):
                    raise InvalidMessage("JSON string contains a lone surrogate (not valid Unicode text)")
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            if depth > max_depth:
                raise InvalidMessage(f"JSON nested deeper than {max_depth} levels")
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str) and _SURROGATE.search(item):
            raise InvalidMessage("JSON string contains a lone surrogate (not valid Unicode text)")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"JSON does not allow {name}")


def _float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"JSON number {text[:40]} is out of range")
    return value


def _int(text: str) -> int:
    if len(text) > 20:  # before int(): Python refuses (slowly) past 4,300 digits
        raise ValueError(f"JSON integer of {len(text)} digits is out of range (64-bit)")
    value = int(text)
    if not -MAX_INTEGER - 1 <= value <= MAX_INTEGER:
        raise ValueError(f"JSON integer {text} is out of range (64-bit)")
    return value


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise ValueError(f"JSON object has a duplicate key {dup[:40]!r}")
    return obj


# Built once: json.loads(..., hooks) would build a decoder per call (a few µs on every record).
_DECODER = json.JSONDecoder(
    parse_constant=_refuse_constant, parse_float=_float, parse_int=_int, object_pairs_hook=_object
)
