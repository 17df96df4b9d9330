"""The JSON Schema files are the contract; the typed classes must agree with them exactly."""

from __future__ import annotations

import dataclasses
import json
import typing
from datetime import datetime
from pathlib import Path

import jsonschema
import pytest

from schemas.channels import REGISTRY
from schemas.codec import SCHEMA_DIR, schema
from schemas.events import EVENT_TYPES, Event
from schemas.versions import CHANNEL_FIELDS, CHANNEL_TYPES_V2, UPCASTERS, V1_CHANNELS

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
    """Every version from 1 to the class's has its file, and each older one an upcaster, so
    records of any version in the log can still be read."""
    files = {(p.parent.name, int(p.stem[1:])) for p in SCHEMA_FILES}
    versions = {(t, v) for t, cls in EVENT_TYPES.items() for v in range(1, cls.VERSION + 1)}
    assert files == versions
    older = {(t, v) for t, v in versions if v < EVENT_TYPES[t].VERSION}
    assert set(UPCASTERS) == older


def test_no_current_schema_lists_the_channels() -> None:
    """A new channel is a registry entry: no current schema may enumerate channel names."""
    names = set(REGISTRY.names)
    for event_type, cls in EVENT_TYPES.items():
        text = json.dumps(schema(event_type, cls.VERSION)["properties"])
        for prop in schema(event_type, cls.VERSION)["properties"].values():
            for enum in (prop.get("enum"), prop.get("items", {}).get("enum")):
                if event_type == "notification.read":
                    continue  # ``via`` (api | websocket) names where a read happened, not a channel
                assert not names & set(enum or ()), f"{event_type}: channel enum in {text}"
    assert set(CHANNEL_FIELDS) == set(CHANNEL_TYPES_V2) == set(V1_CHANNELS)
    for event_type, field in CHANNEL_FIELDS.items():
        prop = schema(event_type, 1)["properties"][field]
        enum = prop.get("enum") or prop["items"]["enum"]
        assert V1_CHANNELS[event_type] == {c for c in enum if c is not None}, f"{event_type} v1 channels"
    for event_type, field in CHANNEL_FIELDS.items():
        assert field in schema(event_type)["properties"]


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
