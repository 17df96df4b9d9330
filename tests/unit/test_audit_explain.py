"""``herald why`` wording: each decision and delivery path in plain words, from records alone."""

from __future__ import annotations

from typing import Any

from engine.explain import DEADLETTER, Fact, concerns, explain

NID = "n-1"
TOKEN = "ab" * 32


class _Log:
    def __init__(self) -> None:
        self.facts: list[Fact] = []

    def add(self, kind: str, **data: Any) -> None:
        offset = len(self.facts)
        event = {"type": kind, "id": f"e{offset}", "time": f"2026-12-02T08:00:{offset:02d}Z", "data": data}
        self.facts.append(Fact("herald.events", 0, offset, 1_000 * offset, kind, event))

    def letter(self, error: str, value: dict[str, Any] | None = None, **headers: str) -> None:
        all_headers = {"herald-error": error, "herald-source-topic": "herald.requests.high", **headers}
        all_headers.setdefault("herald-source-partition", "2")
        all_headers.setdefault("herald-source-offset", "7")
        self.facts.append(Fact("herald.deadletter", 0, len(self.facts), -1, DEADLETTER, value or {}, all_headers))


def _accepted(log: _Log, *channels: str) -> None:
    log.add(
        "notification.accepted",
        notification_id=NID,
        user_id="alice",
        priority="high",
        channels=list(channels),
        title="t",
    )


def test_offline_then_replayed_on_reconnect() -> None:
    log = _Log()
    _accepted(log, "websocket")
    log.add("delivery.deferred", notification_id=NID, user_id="alice", channel="websocket", reason="offline")
    log.add(
        "delivery.succeeded",
        notification_id=NID,
        user_id="alice",
        channel="websocket",
        target="node-a/c1",
        provider_id="replay",
        latency_ms=900.0,
    )
    found = explain(NID, log.facts)
    assert found.decision == "accepted" and found.user_id == "alice"
    assert found.channels["websocket"].outcome == "delivered"
    text = "\n".join(found.lines())
    assert "routed to: websocket" in text
    assert "deferred, the user was offline" in text
    assert "replayed on reconnect at 2026-12-02T08:00:02Z" in text


def test_email_fallback_cancelled_by_a_read() -> None:
    log = _Log()
    _accepted(log, "websocket", "email")
    log.add("delivery.succeeded", notification_id=NID, user_id="alice", channel="websocket", target="n/c", latency_ms=1)
    log.add(
        "delivery.deferred",
        notification_id=NID,
        user_id="alice",
        channel="email",
        reason="fallback: email if unread at 2026-12-02T09:00:00Z",
    )
    log.add("notification.read", notification_id=NID, user_id="alice", via="api")
    log.add("delivery.cancelled", notification_id=NID, user_id="alice", channel="email", reason="read")
    found = explain(NID, log.facts)
    assert found.channels["email"].outcome == "cancelled"
    assert found.read_at == "2026-12-02T08:00:03Z"
    text = "\n".join(found.lines())
    assert "email fallback cancelled by a read at 2026-12-02T08:00:04Z" in text
    assert "read by the user (via api)" in text


def test_apns_410_invalidates_the_token_and_retries_are_counted() -> None:
    log = _Log()
    _accepted(log, "apns", "email")
    log.add("device.invalidated", user_id="alice", device_token=TOKEN, reason="Unregistered")
    log.add(
        "delivery.failed",
        notification_id=NID,
        user_id="alice",
        channel="apns",
        target=TOKEN,
        attempt=1,
        retriable=False,
        error="APNs 410 Unregistered: device token invalidated",
    )
    log.add("delivery.abandoned", notification_id=NID, user_id="alice", channel="apns", target=TOKEN, attempts=1,
            error="APNs 410 Unregistered: device token invalidated")  # fmt: skip
    for attempt in (1, 2):
        log.add("delivery.failed", notification_id=NID, user_id="alice", channel="email", target="a@x.test",
                attempt=attempt, retriable=True, error="421 try later")  # fmt: skip
        log.add("delivery.retry_scheduled", notification_id=NID, user_id="alice", channel="email", target="a@x.test",
                attempt=attempt + 1, due_at="2026-12-02T08:01:00Z", delay_seconds=60.0)  # fmt: skip
    log.add("delivery.succeeded", notification_id=NID, user_id="alice", channel="email", target="a@x.test",
            attempt=3, provider_id="<m@x>", latency_ms=5.0)  # fmt: skip
    found = explain(NID, log.facts)
    apns, email = found.channels["apns"], found.channels["email"]
    assert apns.outcome == "abandoned" and apns.targets[TOKEN].attempts == 1
    assert email.outcome == "delivered" and email.targets["a@x.test"].attempts == 3
    text = "\n".join(found.lines())
    assert "device token abababab...abab invalidated (Unregistered)" in text
    assert "the device token was invalidated" in text
    assert "email: attempt 3 to a@x.test scheduled" in text
    assert "target a@x.test: delivered after 3 attempts" in text


def test_refusals_say_why() -> None:
    log = _Log()
    log.add("notification.rate_limited", notification_id=NID, user_id="bob", priority="low", limit=20,
            window_seconds=3600, retry_after_seconds=12.5)  # fmt: skip
    limited = explain(NID, log.facts)
    assert limited.decision == "rate_limited"
    assert "20 low-priority notifications accepted in the last 3600 s window" in limited.decision_text
    assert "after 12.5 s" in limited.decision_text

    log = _Log()
    log.add("notification.duplicate", notification_id=NID, user_id="bob", idempotency_key="k-1", original_id="n-0")
    duplicate = explain(NID, log.facts)
    assert duplicate.decision == "duplicate"
    assert "key 'k-1' was already used by notification n-0" in duplicate.decision_text


def test_rejected_with_its_schema_error_and_its_dead_letter() -> None:
    log = _Log()
    log.letter("data: missing title", {"id": NID, "data": {"user_id": "carol"}})
    log.add("notification.rejected", notification_id=NID, user_id="carol", reasons=["data: missing title"])
    found = explain(NID, log.facts)
    assert found.decision == "rejected"
    assert found.decision_text == (
        "not accepted: rejected: data: missing title; the raw request was dead-lettered (from herald.requests.high/2/7)"
    )


def test_a_request_that_never_parsed_is_explained_by_its_dead_letter() -> None:
    log = _Log()
    log.letter("not JSON: unexpected end of data")
    found = explain(NID, log.facts)
    assert found.decision == "dead_lettered"
    assert "dead-lettered (from herald.requests.high/2/7): not JSON" in found.decision_text
    assert found.as_json()["summary"][1].startswith("decision: not accepted")


def test_which_records_concern_a_notification() -> None:
    assert concerns(NID, {"data": {"notification_id": NID}}, {}, b"")
    assert concerns(NID, {"correlationid": NID, "data": {}}, {}, b"")
    assert concerns(NID, {}, {"ce_id": NID}, b"")
    assert concerns(NID, {}, {}, b'{"specversion":"1.0", "id" : "n-1", "data": {')  # truncated JSON
    assert not concerns(NID, {}, {}, b'{"id":"n-10"}')
    assert not concerns(NID, {"data": {"notification_id": "n-2", "title": "n-1"}}, {}, b'{"title":"n-1"}')
