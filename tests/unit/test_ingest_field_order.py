"""``decide_request`` and ``follow`` build their event and envelope positionally: every field
must land where it belongs (each given a value no other field has)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from engine.notification import decide_request, follow
from engine.priority import Priority
from schemas.envelope import Envelope
from schemas.events import NotificationAccepted, NotificationExpired, NotificationRequested

NOW = datetime(2026, 12, 5, 4, 0, tzinfo=UTC)


SHARED: dict[str, object] = {
    "user_id": "the-user",
    "title": "the-title",
    "body": "the-body",
    "priority": "high",
    "channels": ("websocket", "email"),
    "category": "the-category",
    "data": {"the": "data"},
    "idempotency_key": "the-key",
    "collapse_key": "the-collapse",
    "expires_at": NOW + timedelta(hours=2),
    "deliver_after": NOW + timedelta(hours=1),
    "device_token": "ab" * 32,
    "email": "the@example.com",
    "badge": 7,
    "sound": "the-sound",
    "push_type": "background",
}
"""The request's fields, each a value no other field has; the acceptance carries them all."""


def test_the_acceptance_carries_each_field_of_the_request_in_its_place() -> None:
    cmd = NotificationRequested(**SHARED)  # type: ignore[arg-type]
    request = Envelope(
        "the-request", "the-source", NOW - timedelta(seconds=3), cmd, None, "the-user", "high", "the-correlation"
    )
    [decided] = decide_request(request, topic_priority=Priority.HIGH, now=NOW)
    accepted = decided.data
    assert accepted == NotificationAccepted(
        notification_id="the-request",
        requested_at=NOW - timedelta(seconds=3),
        **SHARED,  # type: ignore[arg-type]
    )
    assert [f.name for f in dataclasses.fields(Envelope)] == [
        "id", "source", "time", "data", "subject", "userid", "priority", "correlationid"
    ]  # fmt: skip
    assert (decided.source, decided.time, decided.subject, decided.userid, decided.priority) == (
        "herald/ingest",
        NOW,
        "the-request",
        "the-user",
        "high",
    )
    assert decided.correlationid == "the-correlation"


def test_an_event_without_user_or_priority_takes_them_from_its_cause() -> None:
    cause = Envelope("c", "s", NOW, NotificationExpired("n", "u", NOW), "n", "cause-user", "low", None)
    env = follow(cause, NotificationExpired("n2", "", NOW), now=NOW, source="here")
    assert (env.source, env.time, env.subject, env.userid, env.priority, env.correlationid) == (
        "here",
        NOW,
        "n2",
        "cause-user",
        "low",
        "c",
    )
