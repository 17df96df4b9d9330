"""Shared helpers of the policy tests: requests as ingest sees them, schema checks of outputs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import jsonschema

from engine.notification import decide_request
from engine.priority import Priority
from schemas.codec import decode, encode, envelope_to_dict, schema
from schemas.envelope import Envelope
from schemas.events import NotificationRequested

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def requested(rid: str = "req-1", *, user: str = "alice", when: datetime = NOW, **fields: Any) -> Envelope:
    """A decoded ``notification.requested``."""
    data = NotificationRequested(**{"user_id": user, "title": "t", **fields})
    return Envelope(id=rid, source="test", time=when, data=data)


def accepted(rid: str = "req-1", *, priority: Priority = Priority.LOW, now: datetime = NOW, **fields: Any) -> Envelope:
    """The provisional acceptance validation gives ``requested(rid, **fields)``."""
    [env] = decide_request(requested(rid, when=now, **fields), topic_priority=priority, now=now)
    return env


def assert_valid(env: Envelope) -> None:
    """``env`` round-trips through the codec and its data validates against the schema file."""
    assert decode(encode(env)) == env
    doc = envelope_to_dict(env)
    jsonschema.Draft202012Validator(
        schema(env.type), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).validate(doc["data"])
