"""The JSON Schema files are the contract; the typed classes must agree with them exactly."""

from __future__ import annotations

import dataclasses
import json
import typing
from datetime import datetime
from pathlib import Path

import jsonschema
import pytest

from schemas.codec import SCHEMA_DIR, schema
from schemas.events import EVENT_TYPES, Event

SCHEMA_FILES = sorted(SCHEMA_DIR.glob("*/v*.json"))


def _json_types(hint: object) -> set[str]:
    """JSON types a Python annotation admits."""
    args = typing.get_args(hint)
    if type(None) in args:
        return {"null"} | set().union(*(_json_types(a) for a in args if a is not type(None)))
    origin = typing.get_origin(hint) or hint
    return {
        str: {"string"},
        int: {"integer"},
        float: {"number", "integer"},
        bool: {"boolean"},
        dict: {"object"},
        tuple: {"array"},
        datetime: {"string"},
    }[origin]  # type: ignore[index]


def _schema_types(prop: dict[str, typing.Any]) -> set[str]:
    if "enum" in prop:
        mapping = {str: "string", type(None): "null", int: "integer"}
        return {mapping[type(v)] for v in prop["enum"]}
    kinds = prop["type"]
    return set(kinds) if isinstance(kinds, list) else {kinds}


def test_every_schema_file_has_a_class_and_every_class_a_file() -> None:
    files = {(p.parent.name, int(p.stem[1:])) for p in SCHEMA_FILES}
    classes = {(t, cls.VERSION) for t, cls in EVENT_TYPES.items()}
    assert files == classes


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_class_fields_match_schema(event_type: str) -> None:
    cls: type[Event] = EVENT_TYPES[event_type]
    doc = schema(event_type, cls.VERSION)
    jsonschema.Draft202012Validator.check_schema(doc)
    assert doc["additionalProperties"] is False, "unknown fields must be rejected"
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert set(fields) == set(doc["properties"])
    required = {
        n for n, f in fields.items() if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    assert required == set(doc["required"])
    for name, prop in doc["properties"].items():
        assert prop.get("description"), f"{event_type}.{name} needs a description"
        py_types = _json_types(hints[name])
        assert _schema_types(prop) <= py_types, f"{event_type}.{name}: schema {prop} vs {hints[name]}"
        if name not in doc["required"]:
            default = fields[name].default
            if default is dataclasses.MISSING:
                default = fields[name].default_factory()  # type: ignore[misc]
            expected = list(default) if isinstance(default, tuple) else default
            assert prop.get("default") == expected, f"{event_type}.{name}: default differs"
        if prop.get("format") == "date-time":
            assert datetime in (typing.get_args(hints[name]) or (hints[name],))


def test_schema_files_are_valid_json_with_ids() -> None:
    for path in SCHEMA_FILES:
        doc = json.loads(Path(path).read_text())
        assert doc["$id"] == f"herald:{path.parent.name}:{path.stem}"
