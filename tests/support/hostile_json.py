"""Hypothesis strategies for hostile JSON: a valid request, then one poisonous mutation.

The mutations are what a careless or malicious producer sends: deep nesting, huge
numbers, ``NaN``/``Infinity``, duplicate keys, invalid UTF-8, lone surrogates, oversized
strings, wrong types, truncation and plain garbage. Every document is bytes, so the
same corpus feeds Kafka records, REST bodies and WebSocket frames.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from hypothesis import strategies as st

_NUMBER_TOKENS = ("NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1e-999", "-0", "18446744073709551616")
_FIELDS = ("user_id", "title", "body", "category", "idempotency_key", "collapse_key", "priority", "channels", "data")
_LENGTHS = (0, 1, 63, 64, 65, 199, 200, 201, 1000, 20_000)

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
"""Any JSON value (a wrong type wherever a field expects something else)."""


def base_request(user: str, *, title: str = "fuzz") -> dict[str, Any]:
    """A valid structured ``notification.requested`` with a fresh id."""
    return {
        "specversion": "1.0",
        "type": "notification.requested",
        "id": str(uuid.uuid4()),
        "source": "fuzz",
        "data": {"user_id": user, "title": title},
    }


def _dump(doc: Any) -> str:
    return json.dumps(doc, separators=(",", ":"))


def _splice(text: str, at: str, insert: str) -> str:
    """Replace the first ``at`` marker (a unique placeholder string) by raw ``insert``."""
    return text.replace(json.dumps(at), insert, 1)


@st.composite
def hostile_document(draw: st.DrawFn, body: dict[str, Any], *, inner: str = "data") -> bytes:
    """``body`` (a JSON object) with one hostile mutation applied, as bytes.

    ``inner`` names the key of ``body`` whose object is the application payload to
    poison (``data`` of a CloudEvent); ``""`` poisons ``body`` itself.
    """
    doc = json.loads(json.dumps(body))
    target: dict[str, Any] = doc[inner] if inner else doc
    kind = draw(
        st.sampled_from(
            (
                "deep",
                "number",
                "duplicate",
                "utf8",
                "surrogate",
                "length",
                "wrong_type",
                "truncate",
                "garbage",
                "valid",
            )
        )
    )
    marker = "@@hostile-marker@@"  # unique in the document; deterministic for Hypothesis
    if kind == "deep":
        depth = draw(st.sampled_from((20, 29, 30, 31, 33, 100, 600, 1000, 5000)))
        opener = draw(st.sampled_from(("[", '{"a":')))
        closer = "]" if opener == "[" else "}"
        target.setdefault("data", {})
        if isinstance(target.get("data"), dict):
            target["data"]["deep"] = marker
        else:
            target["deep"] = marker
        return _splice(_dump(doc), marker, opener * depth + "1" + closer * depth).encode()
    if kind == "number":
        token = draw(st.sampled_from((*_NUMBER_TOKENS, "9" * 5000, "-" + "9" * 30)))
        target[draw(st.sampled_from(("badge", "n", "title")))] = marker
        return _splice(_dump(doc), marker, token).encode()
    if kind == "duplicate":
        field = draw(st.sampled_from(tuple(target) or ("x",)))
        text = _dump(doc)
        key = json.dumps(field) + ":"
        return text.replace(key, key + _dump(draw(json_values)) + "," + key, 1).encode()
    if kind == "utf8":
        raw = _dump(doc).encode()
        at = draw(st.integers(0, len(raw)))
        junk = draw(st.sampled_from((b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x00")))
        return raw[:at] + junk + raw[at:]
    if kind == "surrogate":
        field = draw(st.sampled_from(("user_id", "title", "body", "key", "id")))
        escape = "\\u" + draw(st.sampled_from(("d800", "DBFF", "dc00", "DFFF")))
        if field == "key":
            target[marker] = "v"
            return _dump(doc).replace(marker, "k" + escape, 1).encode()
        holder = doc if field == "id" else target
        holder[field] = marker
        return _dump(doc).replace(marker, "x" + escape + "y", 1).encode()
    if kind == "length":
        field = draw(st.sampled_from((*_FIELDS, "id", "source", "subject", "correlationid")))
        holder = doc if field in ("id", "source", "subject", "correlationid") else target
        holder[field] = draw(st.sampled_from(("x", "é", "\U0001f600"))) * draw(st.sampled_from(_LENGTHS))
        return _dump(doc).encode()
    if kind == "wrong_type":
        field = draw(st.sampled_from((*_FIELDS, "id", "type", "time")))
        holder = doc if field in ("id", "type", "time") else target
        holder[field] = draw(json_values)
        return _dump(doc).encode()
    if kind == "truncate":
        raw = _dump(doc).encode()
        return raw[: draw(st.integers(0, max(0, len(raw) - 1)))]
    if kind == "garbage":
        return draw(st.binary(max_size=200))
    return _dump(doc).encode()
