"""docs/asyncapi.yaml is valid AsyncAPI 3.0, generated from schemas/, and true to the records.

The document is checked against the AsyncAPI 3.0.0 JSON Schema (vendored in
``tests/support/asyncapi/``), for drift against its generator (regenerate with
``uv run python -m herald.asyncapi``), for every topic and event type, for references
that resolve, and by validating records the code really writes against the payload
schemas the document gives for them.
"""

from __future__ import annotations

import json
import typing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from api.rest.admin.deadletters import REASON, REDRIVEN_FROM
from engine.schedule import Due, Kind, cancel_command
from engine.settings import Settings
from engine.topics import TopicNames
from herald.asyncapi import TARGET, render
from schemas.asyncapi import DEADLETTER_HEADERS, REQUEST_TYPE, SCHEDULE_KINDS, WORK_HEADERS, event_schema_name
from schemas.codec import encode, envelope_to_dict, schema
from schemas.envelope import Envelope
from schemas.events import EVENT_TYPES, NotificationAccepted, NotificationRead, NotificationRequested
from streams.delivery_work import ATTEMPT_HEADER, TARGET_HEADER

ROOT = Path(__file__).parents[2]
SPEC = ROOT / "tests" / "support" / "asyncapi" / "asyncapi-3.0.0.schema.json"
NAMES = TopicNames(Settings().topic_prefix)


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(TARGET.read_text())
    return loaded


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
        node = node[part]
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def validate(doc: dict[str, Any], message: str, value: Any) -> None:
    """Validate ``value`` against the payload the document gives for ``message`` (references resolved in it)."""
    root = {**doc, "$ref": f"#/components/messages/{message}/payload"}
    jsonschema.Draft7Validator(root, format_checker=jsonschema.FormatChecker()).validate(value)


def test_the_file_is_what_the_generator_makes_from_the_schemas() -> None:
    assert TARGET.read_text() == render(), "docs/asyncapi.yaml is stale: run `uv run python -m herald.asyncapi`"


def test_the_document_is_valid_asyncapi_3(doc: dict[str, Any]) -> None:
    spec = json.loads(SPEC.read_text())
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}"
        for e in jsonschema.Draft7Validator(spec).iter_errors(doc)
    ]
    assert not errors, errors
    assert doc["asyncapi"] == "3.0.0"
    assert {"info", "channels", "operations", "components"} <= set(doc)


def test_every_topic_is_a_channel_and_every_reference_resolves(doc: dict[str, Any]) -> None:
    assert {c["address"] for c in doc["channels"].values()} == set(NAMES.all)
    for ref in refs(doc):
        resolve(doc, ref)
    for channel_id, channel in doc["channels"].items():
        assert channel["messages"], f"{channel_id} carries no message"
        actions = {
            op["action"] for op in doc["operations"].values() if op["channel"]["$ref"] == f"#/channels/{channel_id}"
        }
        assert actions == {"send", "receive"}, f"{channel_id}: Herald both writes and reads every topic"
    for op_id, op in doc["operations"].items():
        for message in op["messages"]:
            assert message["$ref"].startswith(op["channel"]["$ref"] + "/messages/"), f"{op_id}: {message}"


def test_every_event_type_has_its_message_and_its_schema(doc: dict[str, Any]) -> None:
    components = doc["components"]
    for event_type, cls in EVENT_TYPES.items():
        message = components["messages"][event_type]
        assert message["title"] == f"{event_type} v{cls.VERSION}"
        data = message["payload"]["allOf"][1]["properties"]["data"]["$ref"]
        expected = {k: v for k, v in schema(event_type, cls.VERSION).items() if k not in ("$schema", "$id")}
        assert resolve(doc, data) == expected
        assert data.endswith(event_schema_name(event_type))
    log = doc["channels"][NAMES.events.removeprefix(NAMES.prefix)]["messages"]
    assert set(log) == set(EVENT_TYPES) - {REQUEST_TYPE}
    for topic in NAMES.requests:
        assert set(doc["channels"][topic.removeprefix(NAMES.prefix)]["messages"]) == {REQUEST_TYPE}


def test_records_the_code_writes_match_their_messages(doc: dict[str, Any]) -> None:
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    request = Envelope(
        id="n-1",
        source="shell",
        time=now,
        data=NotificationRequested(user_id="alice", title="Hello", channels=("websocket", "email")),
        userid="alice",
        priority="high",
    )
    validate(doc, REQUEST_TYPE, json.loads(encode(request)))
    accepted = Envelope(
        id="e-1",
        source="herald/ingest",
        time=now,
        subject="n-1",
        userid="alice",
        data=NotificationAccepted(
            notification_id="n-1",
            user_id="alice",
            title="Hello",
            body="",
            priority="high",
            channels=("email",),
            category="",
            data={},
            requested_at=now,
        ),
    )
    validate(doc, "notification.accepted", json.loads(encode(accepted)))
    validate(doc, "delivery.work", json.loads(encode(accepted)))
    with pytest.raises(jsonschema.ValidationError):  # the schemas in the document do refuse things
        validate(doc, "notification.accepted", {**json.loads(encode(accepted)), "type": "notification.read"})

    due = Due("retry", "n-1", "email", now.timestamp(), envelope_to_dict(accepted), attempt=2, target="a@example.org")
    validate(doc, "scheduler.schedule", {"op": "schedule", "item": due.to_json()})
    read = Envelope(
        id="e-2",
        source="herald/api",
        time=now,
        subject="n-1",
        userid="alice",
        data=NotificationRead(notification_id="n-1", user_id="alice"),
    )
    validate(doc, "scheduler.cancel", json.loads(json.dumps(cancel_command(envelope_to_dict(read), "read"))))
    validate(doc, "scheduler.tick", {"op": "tick"})
    assert set(typing.get_args(Kind)) == set(SCHEDULE_KINDS)


def test_the_headers_named_are_those_the_code_writes() -> None:
    assert {ATTEMPT_HEADER, TARGET_HEADER} == set(WORK_HEADERS)
    assert {REASON, REDRIVEN_FROM} <= set(DEADLETTER_HEADERS)
    source = (ROOT / "streams" / "dead_letters.py").read_text() + (ROOT / "streams" / "delivery_attempt.py").read_text()
    for header in set(DEADLETTER_HEADERS) - {REDRIVEN_FROM}:
        assert f'"{header}"' in source, f"no code writes the dead-letter header {header}"
