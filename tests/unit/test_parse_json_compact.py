"""``parse_json`` reads documents written by orjson with orjson itself (``schemas.limits._compact``):
the value must be the strict parser's, and every document the strict parser refuses is still
refused with the same reason (the dead letter's)."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from schemas.errors import InvalidMessage
from schemas.limits import _NOT_COMPACT, MAX_JSON_DEPTH, _compact, parse_json


class _Strict(bytes):
    """Bytes that take the strict path (orjson's is for ``bytes`` exactly)."""


def strict(raw: bytes) -> Any:
    """The strict parser's answer for ``raw`` (its ``str`` path never takes orjson's)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return _outcome(lambda: parse_json(_Strict(raw)))
    return _outcome(lambda: parse_json(text))


def _outcome(parse: Any) -> tuple[str, str]:
    try:
        return ("value", repr(parse()))  # repr tells 1 from 1.0 from True, and key order
    except InvalidMessage as exc:
        return (type(exc).__name__, exc.reason)


def _value(rng: random.Random, depth: int) -> Any:
    kind = rng.randrange(9 if depth < 6 else 6)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice(
            [0, 1, -1, 2**31, 2**53 - 1, -(2**53), 2**53 + 1, 2**63 - 1, -(2**63), rng.randrange(-1000, 1000)]
        )
    if kind == 2:
        return rng.choice([0.0, -0.0, 0.1, 1.5, 1e16, 1e-7, 5e-324, 1.7976931348623157e308, rng.random() * 1e6])
    if kind in (3, 4, 5):
        alphabet = 'ab"\\/\n\t\x00\x1f\x7fé€😀\u2028 '
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))
    if kind in (6, 7):
        return {f"k{rng.randrange(5)}{rng.choice('é😀x')}": _value(rng, depth + 1) for _ in range(rng.randrange(5))}
    return [_value(rng, depth + 1) for _ in range(rng.randrange(5))]


def test_documents_orjson_writes_read_as_the_strict_parser_reads_them() -> None:
    rng = random.Random(3)
    compact = 0
    for _ in range(3000):
        raw = orjson.dumps({"data": _value(rng, 1), "id": "x"})
        compact += _compact(raw) is not _NOT_COMPACT
        assert _outcome(lambda raw=raw: parse_json(raw)) == strict(raw), raw
    assert compact > 2000  # most of them took orjson's path


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a":1,"a":2}',  # duplicate key
        b'{"a":{"b":1,"b":1}}',
        b'{"a":"\\ud800"}',  # lone surrogates, escaped
        b'{"a":"\\udc00"}',
        b'{"\\ud800":1}',
        b'{"a":"\xed\xa0\x80"}',  # a surrogate in UTF-8 (invalid UTF-8)
        b'{"a":"\xff"}',
        b"\xef\xbb\xbf{}",  # byte order mark
        b'{"a":NaN}',
        b'{"a":Infinity}',
        b'{"a":-Infinity}',
        b'{"a":1e999}',
        b'{"a":9223372036854775807}',  # the largest 64-bit integer: accepted
        b'{"a":9223372036854775808}',  # one more: refused
        b'{"a":18446744073709551615}',
        b'{"a":-9223372036854775808}',
        b'{"a":-9223372036854775809}',
        b'{"a":9007199254740993}',
        b'{"a":' + b"9" * 30 + b"}",
        b'{"a":1.0}',
        b'{"a":1E5}',
        b'{"a":-0}',
        b'{"a":"\\/\\u00e9"}',
        b'{"a":"\\ud83d\\ude00"}',  # a surrogate pair: a valid character
        b' {"a":1} ',
        b'{"a":1',
        b'{"a":"\x01"}',
        b"",
        b"1",
        b'"x"',
        b"null",
        b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH,
        b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1),  # one level too deep
        b'{"a":' * 40 + b"1" + b"}" * 40,
        b"[" * 2000 + b"]" * 2000,  # past orjson's own recursion limit
    ],
)
def test_what_the_strict_parser_refuses_is_refused_with_its_reason(raw: bytes) -> None:
    assert _outcome(lambda: parse_json(raw)) == strict(raw)
