"""Given a request, when ingest decides, then the outcome is the event a user would expect."""

from __future__ import annotations

from datetime import UTC, datetime

from engine.delivery import websocket_outcome
from engine.notification import decide_request
from engine.priority import Priority
from schemas.codec import decode, encode
from schemas.envelope import Envelope
from schemas.events import (
    DeliveryDeferred,
    DeliverySucceeded,
    NotificationAccepted,
    NotificationRejected,
    NotificationRequested,
)

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def _request(**fields: object) -> Envelope:
    data = NotificationRequested(**{"user_id": "alice", "title": "t", **fields})  # type: ignore[arg-type]
    return Envelope(id="req-1", source="test", time=NOW, data=data)


def test_valid_request_is_accepted_with_channels_resolved() -> None:
    [env] = decide_request(_request(channels=("all",)), topic_priority=Priority.HIGH, now=NOW)
    assert isinstance(env.data, NotificationAccepted)
    assert env.data.notification_id == "req-1"
    assert env.data.channels == ("websocket", "email", "apns")
    assert env.data.priority == "high"
    assert (env.subject, env.userid, env.correlationid) == ("req-1", "alice", "req-1")


def test_priority_mismatch_with_topic_is_rejected_with_reason() -> None:
    [env] = decide_request(_request(priority="low"), topic_priority=Priority.HIGH, now=NOW)
    assert isinstance(env.data, NotificationRejected)
    assert "does not match topic priority" in env.data.reasons[0]


def test_deciding_twice_gives_identical_events() -> None:
    first = decide_request(_request(), topic_priority=Priority.LOW, now=NOW)
    again = decide_request(_request(), topic_priority=Priority.LOW, now=NOW)
    assert first == again


def test_every_emitted_event_validates_against_its_schema() -> None:
    for env in decide_request(_request(), topic_priority=Priority.MEDIUM, now=NOW):
        assert decode(encode(env)) == env


def test_websocket_outcome_succeeded_when_reached_else_deferred() -> None:
    [accepted] = decide_request(_request(), topic_priority=Priority.HIGH, now=NOW)
    ok = websocket_outcome(accepted, ["node-a"], now=NOW)
    assert isinstance(ok.data, DeliverySucceeded) and ok.data.target == "node-a"
    off = websocket_outcome(accepted, [], now=NOW)
    assert isinstance(off.data, DeliveryDeferred) and off.data.reason == "offline"
    assert ok.id != off.id or ok.type != off.type
